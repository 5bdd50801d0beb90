#!/usr/bin/env bash
# Makes sure Fashion-MNIST is on this machine: Debian's dataset-fashion-mnist package when we are
# root, otherwise a clear message on how to get it. Nothing is downloaded at run time.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
have() { for f in $FILES; do [ -f "$1/$f.gz" ] || [ -f "$1/$f" ] || return 1; done; }
if [ -n "${FASHIONSSL_DATA:-}" ] && have "$FASHIONSSL_DATA"; then exit 0; fi
if have "$DIR" || have data/FashionMNIST/raw; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's dataset-fashion-mnist (the data, from the package archive) ..."
  apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null
  have "$DIR" && exit 0
fi
cat >&2 <<MSG
Fashion-MNIST not found. Install it with:
    sudo apt-get install dataset-fashion-mnist
or put the four IDX files ($FILES, .gz or raw) in a folder and set FASHIONSSL_DATA=that/folder
(or pass --data-dir to fashionssl).
MSG
exit 1
