"""Fashion-MNIST from local IDX files, split into train / validation / test.

Nothing is downloaded and nothing is cached: the four gzipped IDX files (about 30 MB) decode in
well under two seconds, so every run reads them afresh. Every way the files can be missing or
damaged ends in a `UserError` that names the file, says what is wrong and how to fix it, because
the CLI shows that message as its only output.

The validation split is carved from the official training set so that hyper-parameters are
chosen without ever looking at the official test set, which is kept for the reported numbers.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fashionssl.errors import UserError

CLASS_NAMES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
DEFAULT_DATA_DIRS: tuple[str, ...] = ("/usr/share/datasets/fashion-mnist", "data/FashionMNIST/raw")
ENV_VAR = "FASHIONSSL_DATA"
IMAGE_SHAPE = (28, 28)

# IDX type codes; all payloads are big-endian.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_MAX_NDIM = 64  # numpy (and so torch.from_numpy) cannot build arrays with more dimensions
_DAMAGED_HINT = (
    "re-install the data (sudo apt-get install --reinstall dataset-fashion-mnist) "
    "or point --data-dir at intact files"
)
_MISSING_HINT = "sudo apt-get install dataset-fashion-mnist, or pass --data-dir DIR holding the four IDX files"


def read_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file into a tensor of the shape and dtype its header declares.

    A name ending in ``.gz`` is gunzipped, any other name is read as raw IDX; the caller picks the
    name (see `find_data_dir`). All six IDX type codes are supported (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), converted to native byte order; Fashion-MNIST
    itself only uses 0x08. The header must declare 1 to 64 dimensions, none of them 0, and the
    payload must hold exactly their product of items: a truncated download and trailing garbage are
    both refused rather than silently reshaped.
    """
    path = Path(path)

    def fail(what: str) -> UserError:
        return UserError(f"{path}: {what}; {_DAMAGED_HINT}")

    try:
        data = path.read_bytes()
    except OSError as e:
        raise UserError(f"{path}: cannot read file ({e.strerror or e}); {_DAMAGED_HINT}") from e
    if not data:
        raise fail("file is empty")
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise fail(f"not a valid gzip file ({e})") from e

    if len(data) < 4:
        raise fail(f"truncated header: {len(data)} bytes, an IDX file starts with a 4-byte magic number")
    zero0, zero1, code, ndim = data[:4]
    if zero0 or zero1:
        raise fail(f"bad magic number 0x{data[:4].hex()}: an IDX file starts with two zero bytes")
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise fail(f"unsupported IDX data type code 0x{code:02X} (supported: {known})")
    if not 1 <= ndim <= _MAX_NDIM:
        raise fail(f"header declares {ndim} dimensions, expected 1 to {_MAX_NDIM}")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise fail(f"truncated header: {ndim} dimensions need {header_size} header bytes but file holds {len(data)}")

    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    shape = "x".join(map(str, dims))
    if 0 in dims:
        raise fail(f"header declares an empty {shape} array")
    dtype = _IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    found = len(data) - header_size
    if found < expected:
        raise fail(f"truncated: header says {shape} ({expected} bytes) but file holds {found}")
    if found > expected:
        raise fail(f"{found - expected} trailing bytes after the {shape} ({expected} bytes) payload")
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(dims)
    return torch.from_numpy(array.astype(dtype.newbyteorder("=")))


def _data_file(directory: Path, name: str) -> Path:
    """``directory/name.gz`` if that file exists, else ``directory/name`` (which may not exist)."""
    gz = directory / f"{name}.gz"
    return gz if gz.is_file() else directory / name


def _missing(directory: Path) -> list[str]:
    """The names in `FILES` that `directory` holds neither gzipped nor raw."""
    return [name for name in FILES.values() if not _data_file(directory, name).is_file()]


def _require_complete(directory: Path, source: str) -> Path:
    """Return `directory` if it holds all four files, else say what is missing; `source` names the setting."""
    if not directory.is_dir():
        raise UserError(f"{source} {directory} is not a directory; {_MISSING_HINT}")
    missing = _missing(directory)
    if missing:
        raise UserError(f"{source} {directory} lacks {', '.join(missing)} (.gz or raw); {_MISSING_HINT}")
    return directory


def find_data_dir(explicit: str | Path | None = None) -> Path:
    """Return the first directory holding all four Fashion-MNIST IDX files (each gzipped or raw).

    Order: `explicit` (the --data-dir flag), $FASHIONSSL_DATA, then `DEFAULT_DATA_DIRS` (the
    second relative to the working directory). A directory the user named must qualify: falling
    through to another copy of the data would silently ignore what they asked for.
    """
    if explicit is not None:
        return _require_complete(Path(explicit), "--data-dir")
    env = os.environ.get(ENV_VAR)
    if env:
        return _require_complete(Path(env), f"${ENV_VAR}")
    for directory in map(Path, DEFAULT_DATA_DIRS):
        if directory.is_dir() and not _missing(directory):
            return directory
    raise UserError(f"Fashion-MNIST IDX files not found in {', '.join(DEFAULT_DATA_DIRS)}; {_MISSING_HINT}")


@dataclass(frozen=True)
class Split:
    """Images (N, 28, 28) uint8 and their labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class FashionMNIST:
    """The three splits: fit on `train`, choose hyper-parameters on `val`, report on `test` once."""

    train: Split
    val: Split
    test: Split


def _read_split(directory: Path, images_key: str, labels_key: str) -> Split:
    """Read and cross-check one images/labels file pair; errors name the offending file."""
    images_path = _data_file(directory, FILES[images_key])
    labels_path = _data_file(directory, FILES[labels_key])
    images, labels = read_idx(images_path), read_idx(labels_path)

    if images.ndim != 3 or tuple(images.shape[1:]) != IMAGE_SHAPE or images.dtype != torch.uint8:
        found = "x".join(map(str, images.shape))
        raise UserError(
            f"{images_path}: holds {found} {images.dtype} images, expected Nx28x28 uint8 (IDX type 0x08); "
            f"{_DAMAGED_HINT}"
        )
    if labels.ndim != 1 or labels.is_floating_point():
        found = "x".join(map(str, labels.shape))
        raise UserError(f"{labels_path}: holds {found} {labels.dtype} labels, expected N integers; {_DAMAGED_HINT}")
    if len(images) != len(labels):
        raise UserError(
            f"{labels_path}: holds {len(labels)} labels but {images_path.name} holds {len(images)} images; "
            f"{_DAMAGED_HINT}"
        )
    labels = labels.long()
    bad = ((labels < 0) | (labels >= len(CLASS_NAMES))).nonzero()
    if len(bad):
        index = int(bad[0])
        raise UserError(
            f"{labels_path}: label {int(labels[index])} at index {index} is outside 0..{len(CLASS_NAMES) - 1}; "
            f"{_DAMAGED_HINT}"
        )
    return Split(images, labels)


def stratified_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random permutation of ``range(len(labels))`` whose every prefix is class-stratified.

    Each item's key is its rank within its class (in a random order) divided by the class size;
    sorted by that key, any prefix holds every class in proportion to its size (exactly 500 per
    class for a 5,000 prefix of Fashion-MNIST's 6,000 per class). Equal keys are ordered by a
    second shuffle so that the classes do not repeat in a fixed pattern. Both the validation split
    and `train_subset` are prefixes of this order, so a quick trial still sees every class; so are
    the label subsets of `label_efficiency`, which makes them nested.
    """
    n = len(labels)
    perm = torch.randperm(n, generator=generator)
    by_class = perm[torch.argsort(labels[perm], stable=True)]  # grouped by class, random inside
    counts = torch.bincount(labels, minlength=len(CLASS_NAMES))
    starts = torch.cumsum(counts, 0) - counts
    key = torch.empty(n, dtype=torch.float64)
    key[by_class] = (torch.arange(n) - starts[labels[by_class]]) / counts[labels[by_class]].double()
    tiebreak = torch.randperm(n, generator=generator)
    return tiebreak[torch.argsort(key[tiebreak], stable=True)]


def load_fashion_mnist(
    data_dir: str | Path | None = None,
    val_size: int = 5000,
    split_seed: int = 0,
    train_subset: int | None = None,
) -> FashionMNIST:
    """Load Fashion-MNIST with a seeded, stratified validation split carved from the training set.

    The split uses its own generator seeded with `split_seed`, so it is the same for the same seed
    whatever else has touched the global RNG. `train_subset` keeps the first N training images
    of the same stratified order after the validation split is carved, so validation numbers stay
    comparable between quick and full runs.
    """
    directory = find_data_dir(data_dir)
    official = _read_split(directory, "train_images", "train_labels")
    test = _read_split(directory, "test_images", "test_labels")

    if not 0 <= val_size < len(official):
        raise UserError(
            f"validation size {val_size} is out of range: pass 0 to {len(official) - 1} "
            f"(it is carved from the {len(official)} training images in {directory})"
        )
    order = stratified_order(official.labels, torch.Generator().manual_seed(split_seed))
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_subset is not None:
        if not 1 <= train_subset <= len(train_idx):
            raise UserError(
                f"--train-subset {train_subset} is out of range: pass 1 to {len(train_idx)} "
                f"(the training images left after carving {val_size} for validation)"
            )
        train_idx = train_idx[:train_subset]

    def take(idx: torch.Tensor) -> Split:
        return Split(official.images[idx], official.labels[idx])

    return FashionMNIST(train=take(train_idx), val=take(val_idx), test=test)
