#!/usr/bin/env bash
# Makes sure the system packages fashionssl needs are on this machine: Fashion-MNIST (Debian's
# dataset-fashion-mnist; the data, nothing is downloaded at run time), Chromium (the report
# tests open report.html in headless Chromium) and a C++ compiler (g++: fashionssl builds its fused
# max-pool kernel on first use, src/fashionssl/kernels). Installs them with apt-get when we are
# root, otherwise says how to get them.
set -euo pipefail
DIR=/usr/share/datasets/fashion-mnist
FILES="train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte"
have_data() { for f in $FILES; do [ -f "$1/$f.gz" ] || [ -f "$1/$f" ] || return 1; done; }
data_ok() {
  { [ -n "${FASHIONSSL_DATA:-}" ] && have_data "$FASHIONSSL_DATA"; } || have_data "$DIR" || have_data data/FashionMNIST/raw
}
chromium_ok() { command -v chromium >/dev/null; }
compiler_ok() { command -v "${CXX:-c++}" >/dev/null; }

missing=""
data_ok || missing="$missing dataset-fashion-mnist"
chromium_ok || missing="$missing chromium"
compiler_ok || missing="$missing g++"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian package(s)$missing (from the package archive) ..."
  apt-get update -q >/dev/null && apt-get install -y -q $missing >/dev/null || echo "apt-get failed" >&2
  data_ok && chromium_ok && compiler_ok && exit 0
fi
if ! data_ok; then
  cat >&2 <<MSG
Fashion-MNIST not found. Install it with:
    sudo apt-get install dataset-fashion-mnist
or put the four IDX files ($FILES, .gz or raw) in a folder and set FASHIONSSL_DATA=that/folder
(or pass --data-dir to fashionssl).
MSG
  exit 1
fi
compiler_ok || cat >&2 <<MSG
No C++ compiler found; CPU training will run PyTorch's max-pool instead of fashionssl's fused
kernel (the same results, slower), and the kernel's tests will be skipped. Install one with:
    sudo apt-get install g++
MSG
chromium_ok && exit 0
cat >&2 <<MSG
Chromium not found; the report tests that open report.html in a browser will be skipped.
Install it with:
    sudo apt-get install chromium
MSG
