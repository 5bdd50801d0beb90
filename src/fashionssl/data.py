"""Datasets of small images, read once into memory and split into train / validation / test.

`load_dataset(source)` reads any of four layouts (README, "Your own data"):
- a folder of IDX files, as Fashion-MNIST ships (the default, found as `find_data_dir` says);
- an `.npz` file with `x_train`, `y_train` and optionally `x_test`, `y_test`;
- an image folder, `root/train/<class>/*.png` and optionally `root/test/<class>/*.png`;
- a folder of unlabelled images, `root/*.png`, for pretraining only.

Images are uint8 (N, C, H, W) tensors, C = 1 (grey) or 3 (colour), square, 28 to 64 pixels.
Nothing is downloaded or cached: Fashion-MNIST's gzipped IDX files decode in under two seconds.
Every way the data can be missing, damaged or inconsistent ends in a one-line `UserError` that
names the file, says what is wrong and how to fix it, because the CLI shows only that line.

The validation split is carved from the training set so that hyper-parameters are chosen without
ever looking at the test set, which is kept for the reported numbers; a source without a test split
gets one carved the same way, so that those numbers still come from images nothing was chosen on.
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
from PIL import Image

from fashionssl.errors import UserError

FASHION_MNIST_CLASSES: tuple[str, ...] = (
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
CLASSES_FILE = "classes.txt"  # one class name per line, beside IDX or npz files
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
MIN_SIZE, MAX_SIZE = 28, 64  # the image sides the encoders and augmentation are made for
MAX_VAL_SIZE = 5000  # the default validation split: 10% of the training images, at most this many

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
    "replace it with an intact copy (Fashion-MNIST: sudo apt-get install --reinstall dataset-fashion-mnist) "
    "or point --data-dir at intact files"
)
_MISSING_HINT = "sudo apt-get install dataset-fashion-mnist, or pass --data-dir DIR holding the four IDX files"
_LAYOUTS = ("pass --data with a folder of IDX files, an .npz file, a folder root/train/<class>/*.png "
            "or a folder of unlabelled images")


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
    """Images (N, C, H, W) uint8 and their labels (N,) int64, or None: unlabelled images."""

    images: torch.Tensor
    labels: torch.Tensor | None

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True)
class DataInfo:
    """What a model and its preprocessing take from the data. Saved in every checkpoint and export,
    so that evaluation, reports and embeddings of new images treat images as training did."""

    channels: int  # 1 (grey) or 3 (colour)
    size: int  # the images' side in pixels
    mean: tuple[float, ...]  # per channel, of the source's training images scaled to [0, 1]
    std: tuple[float, ...]
    class_names: tuple[str, ...] | None  # None: unlabelled data

    @classmethod
    def from_dict(cls, saved: dict) -> DataInfo:
        """From `dataclasses.asdict` output read back from a checkpoint or JSON (lists for tuples)."""
        names = saved["class_names"]
        return cls(int(saved["channels"]), int(saved["size"]), tuple(saved["mean"]), tuple(saved["std"]),
                   None if names is None else tuple(names))


# What checkpoints written before datasets were configurable were trained on.
FASHION_MNIST_INFO = DataInfo(1, 28, (0.2860,), (0.3530,), FASHION_MNIST_CLASSES)


@dataclass(frozen=True)
class Dataset:
    """The three splits: fit on `train`, choose hyper-parameters on `val`, report on `test` once.
    Unlabelled data has every image in `train` and empty `val` and `test`."""

    train: Split
    val: Split
    test: Split
    info: DataInfo
    source: str  # where the data came from, for messages

    @property
    def labelled(self) -> bool:
        return self.info.class_names is not None


@dataclass(frozen=True)
class _Source:
    """A source as read, before any check or split: uint8 images (N, C, H, W), labels or None."""

    train: Split
    test: Split | None
    class_names: tuple[str, ...] | None  # from the data itself, or None: labels are their own names
    where: dict[str, Path | str]  # what to name in messages: train_images, train_labels, test_images, test_labels
    # Normalisation statistics the source is known by, else None: measured from its training images.
    # Fashion-MNIST keeps the rounded constants every documented number was computed with, so its
    # runs replay bit for bit.
    stats: tuple[tuple[float, ...], tuple[float, ...]] | None = None


# ---------------------------------------------------------------------------------------------
# Readers, one per layout


def _read_class_names(path: Path) -> tuple[str, ...] | None:
    """The names in a classes.txt (one per line, blank lines ignored), or None without the file."""
    if not path.is_file():
        return None
    try:
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: cannot read class names ({e}); write one class name per line as UTF-8 text") from None
    if not names or len(set(names)) != len(names):
        raise UserError(f"{path}: needs one distinct class name per line, got {len(names)} lines "
                        f"({len(set(names))} distinct); fix or remove the file")
    return names


def _idx_source(directory: Path, fashion_mnist: bool) -> _Source:
    """The four IDX files of `directory`; class names from a classes.txt beside them, else
    Fashion-MNIST's if `fashion_mnist` (the folder is where Fashion-MNIST is looked for, or --data-dir)."""
    where = {key: _data_file(directory, name) for key, name in FILES.items()}
    arrays = {key: read_idx(path) for key, path in where.items()}
    for key in ("train_images", "test_images"):
        images = arrays[key]
        if images.ndim != 3 or images.dtype != torch.uint8:
            found = "x".join(map(str, images.shape))
            raise UserError(f"{where[key]}: holds {found} {images.dtype} images, expected NxHxW uint8 (IDX type 0x08); "
                            f"{_DAMAGED_HINT}")
    for key in ("train_labels", "test_labels"):
        labels = arrays[key]
        if labels.ndim != 1 or labels.is_floating_point():
            found = "x".join(map(str, labels.shape))
            raise UserError(f"{where[key]}: holds {found} {labels.dtype} labels, expected N integers; {_DAMAGED_HINT}")
    names = _read_class_names(directory / CLASSES_FILE)
    if names is None and fashion_mnist:
        names = FASHION_MNIST_CLASSES
    stats = (FASHION_MNIST_INFO.mean, FASHION_MNIST_INFO.std) if fashion_mnist else None
    return _Source(Split(arrays["train_images"].unsqueeze(1), arrays["train_labels"].long()),
                   Split(arrays["test_images"].unsqueeze(1), arrays["test_labels"].long()), names, where, stats)


def _npz_images(path: Path, key: str, array: np.ndarray) -> torch.Tensor:
    """An npz array of uint8 images (N, H, W) or (N, H, W, C) as (N, C, H, W)."""
    if array.dtype != np.uint8 or array.ndim not in (3, 4):
        shape = "x".join(map(str, array.shape))
        raise UserError(f"{path}: {key} holds {shape} {array.dtype}, expected uint8 images (N, H, W) or (N, H, W, C); "
                        "scale them to 0..255 and save them as uint8")
    images = torch.from_numpy(np.ascontiguousarray(array))
    return images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()


def _npz_labels(path: Path, key: str, array: np.ndarray) -> torch.Tensor:
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
        shape = "x".join(map(str, array.shape))
        raise UserError(f"{path}: {key} holds {shape} {array.dtype}, expected N integer class indices")
    return torch.from_numpy(array.astype(np.int64))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except Exception as e:  # noqa: BLE001  numpy raises many kinds on a damaged zip; all mean "not an npz"
        raise UserError(f"{path}: not a readable .npz file ({type(e).__name__}: {e}); "
                        "save it with numpy.savez") from None


def _npz_source(path: Path) -> _Source:
    """x_train and y_train, optionally x_test and y_test, of an .npz file; class names from a
    classes.txt beside it."""
    arrays = _load_npz(path)
    missing = [key for key in ("x_train", "y_train") if key not in arrays]
    if "x_test" in arrays and "y_test" not in arrays:
        missing.append("y_test (it has x_test)")
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)} (holds {', '.join(sorted(arrays)) or 'nothing'}); "
                        "save x_train (uint8 images), y_train (class indices) and optionally x_test, y_test")
    train = Split(_npz_images(path, "x_train", arrays["x_train"]), _npz_labels(path, "y_train", arrays["y_train"]))
    test = None
    if "x_test" in arrays:
        test = Split(_npz_images(path, "x_test", arrays["x_test"]), _npz_labels(path, "y_test", arrays["y_test"]))
    where = {"train_images": f"{path} x_train", "train_labels": f"{path} y_train",
             "test_images": f"{path} x_test", "test_labels": f"{path} y_test"}
    return _Source(train, test, _read_class_names(path.parent / CLASSES_FILE), where)


def _image_files(folder: Path) -> list[Path]:
    """The image files directly in `folder`, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _read_image(path: Path) -> np.ndarray:
    """One image file as uint8 (H, W) for grey or (H, W, 3) for colour. Palette images are read as
    colour and 1-bit ones as grey; images with alpha or other modes are refused, as converting them
    would be a guess."""
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("1", "P"):
                image = image.convert("L" if image.mode == "1" else "RGB")
            mode = image.mode
            array = np.asarray(image)
    except Exception as e:  # noqa: BLE001  Pillow's decoders raise many kinds on damaged files
        raise UserError(f"{path}: not a readable image ({type(e).__name__}: {e}); replace or remove the file") from None
    if mode not in ("L", "RGB"):
        raise UserError(f"{path}: image mode {mode}; fashionssl reads grey (L) or colour (RGB) images, "
                        "convert it (e.g. Pillow's image.convert('RGB'))")
    return array


def _stack_images(paths: list[Path]) -> torch.Tensor:
    """Image files -> uint8 (N, C, H, W); every image must have the first one's size and mode."""
    first = _read_image(paths[0])
    images = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for i, path in enumerate(paths):
        image = first if i == 0 else _read_image(path)
        if image.shape != first.shape:
            raise UserError(f"{path}: {_describe(image.shape)} but {paths[0]} is {_describe(first.shape)}; "
                            "every image must have the same size and the same mode (grey or colour)")
        images[i] = image
    tensor = torch.from_numpy(images)
    return tensor.unsqueeze(1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2).contiguous()


def _describe(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}x{shape[0]} {'colour' if len(shape) == 3 else 'grey'}"


def _class_folders(root: Path, split: str) -> tuple[list[str], list[torch.Tensor], Path]:
    """(class names, images of each class) of root/split/<class>/; every class needs an image."""
    folder = root / split
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not classes:
        raise UserError(f"{folder}: no class folders; put each class's images in {folder}/<class name>/")
    per_class = []
    for name in classes:
        files = _image_files(folder / name)
        if not files:
            raise UserError(f"{folder / name}: class {name!r} has no images ({', '.join(IMAGE_SUFFIXES)}); "
                            "add some or remove the folder")
        per_class.append(files)
    all_files = [f for files in per_class for f in files]
    images = _stack_images(all_files)
    return classes, list(images.split([len(files) for files in per_class])), folder


def _labelled(per_class: list[torch.Tensor], indices: list[int]) -> Split:
    images = torch.cat(per_class)
    labels = torch.cat([torch.full((len(x),), i, dtype=torch.long) for x, i in zip(per_class, indices)])
    return Split(images, labels)


def _image_folder_source(root: Path) -> _Source:
    """root/train/<class>/ and optionally root/test/<class>/ (classes named as in train/)."""
    classes, per_class, train_folder = _class_folders(root, "train")
    where = {"train_images": train_folder, "train_labels": train_folder,
             "test_images": root / "test", "test_labels": root / "test"}
    test = None
    if (root / "test").is_dir():
        test_classes, test_per_class, test_folder = _class_folders(root, "test")
        unknown = sorted(set(test_classes) - set(classes))
        if unknown:
            raise UserError(f"{test_folder}: class folder(s) {', '.join(unknown)} are not in {train_folder}; "
                            "the test classes must be training classes")
        test = _labelled(test_per_class, [classes.index(name) for name in test_classes])
    return _Source(_labelled(per_class, list(range(len(classes)))), test, tuple(classes), where)


def _read_source(source: str | Path | None, data_dir: str | Path | None) -> _Source:
    """Pick the reader for `source`; without one, Fashion-MNIST: in the IDX folder `data_dir`
    (--data-dir), or else where `find_data_dir` finds it."""
    if source is None:
        return _idx_source(find_data_dir(data_dir), fashion_mnist=True)
    path = Path(source)
    if path.is_file() and path.suffix == ".npz":
        return _npz_source(path)
    if not path.is_dir():
        raise UserError(f"--data {path}: {'no such file or folder' if not path.exists() else 'not an .npz file'}; "
                        f"{_LAYOUTS}")
    if not _missing(path):
        return _idx_source(path, fashion_mnist=False)
    if (path / "train").is_dir():
        return _image_folder_source(path)
    try:
        files = _image_files(path)
    except OSError as e:
        raise UserError(f"--data {path}: cannot list the folder ({e.strerror or e}); check its permissions") from None
    if files:  # unlabelled images
        return _Source(Split(_stack_images(files), None), None, None, {"train_images": path})
    raise UserError(f"--data {path}: holds no images, no train/ folder and not the four IDX files "
                    f"({', '.join(FILES.values())}); {_LAYOUTS}")


# ---------------------------------------------------------------------------------------------
# Checks and statistics


def _check_images(images: torch.Tensor, where: Path | str, reference: torch.Tensor | None = None) -> None:
    """Square, MIN_SIZE..MAX_SIZE pixels, 1 or 3 channels, and the shape of `reference` if given."""
    n, channels, height, width = images.shape
    if reference is not None and images.shape[1:] != reference.shape[1:]:
        found, expected = "x".join(map(str, images.shape[1:])), "x".join(map(str, reference.shape[1:]))
        raise UserError(f"{where}: images are {found} (channels x height x width) but the training images are "
                        f"{expected}; every split needs the same size and channels")
    if channels not in (1, 3):
        raise UserError(f"{where}: images have {channels} channels; fashionssl reads grey (1) or colour (3) images")
    if height != width or not MIN_SIZE <= height <= MAX_SIZE:
        raise UserError(f"{where}: images are {width}x{height} pixels; fashionssl trains on square images of "
                        f"{MIN_SIZE} to {MAX_SIZE} pixels: resize or crop them first")
    if n == 0:
        raise UserError(f"{where}: holds no images")


def _check_labels(split: Split, num_classes: int, where: dict[str, Path | str], prefix: str) -> None:
    """As many labels as images, each in 0..num_classes-1."""
    images_at, labels_at = where[f"{prefix}_images"], where[f"{prefix}_labels"]
    if len(split.labels) != len(split.images):
        raise UserError(f"{labels_at}: holds {len(split.labels)} labels but {getattr(images_at, 'name', images_at)} "
                        f"holds {len(split.images)} images; every image needs one label")
    bad = ((split.labels < 0) | (split.labels >= num_classes)).nonzero()
    if len(bad):
        index = int(bad[0])
        raise UserError(f"{labels_at}: label {int(split.labels[index])} at index {index} is outside "
                        f"0..{num_classes - 1} (the data has {num_classes} classes); fix the labels or list every "
                        f"class in {CLASSES_FILE}")


def _class_names(source: _Source) -> tuple[str, ...]:
    """The source's own names, else "0", "1", ... for the labels up to the largest; every class
    must have training images (a class without them could never be learnt or judged)."""
    labels = source.train.labels
    names = source.class_names or tuple(str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0))
    _check_labels(source.train, len(names), source.where, "train")
    if source.test is not None:
        _check_labels(source.test, len(names), source.where, "test")
    empty = (torch.bincount(labels, minlength=len(names)) == 0).nonzero()
    if len(empty):
        index = int(empty[0])
        raise UserError(f"{source.where['train_labels']}: class {names[index]!r} (label {index}) has no training "
                        f"images; add some, or renumber the labels (and {CLASSES_FILE}) without it")
    return names


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 (N, C, H, W) images scaled to [0, 1], exactly, from a
    256-bin histogram of each channel (no float copy of the images)."""
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in images.unbind(1):
        counts = torch.bincount(channel.flatten(), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        means.append(float(mean))
        stds.append(float(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt().clamp_min(1e-3)))
    return tuple(means), tuple(stds)


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
    counts = torch.bincount(labels)
    starts = torch.cumsum(counts, 0) - counts
    key = torch.empty(n, dtype=torch.float64)
    key[by_class] = (torch.arange(n) - starts[labels[by_class]]) / counts[labels[by_class]].double()
    tiebreak = torch.randperm(n, generator=generator)
    return tiebreak[torch.argsort(key[tiebreak], stable=True)]


def default_val_size(n_train: int) -> int:
    """10% of the training images, at most MAX_VAL_SIZE (Fashion-MNIST: 5,000 of 60,000)."""
    return min(MAX_VAL_SIZE, n_train // 10)


def _take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.images[index], None if split.labels is None else split.labels[index])


def load_dataset(
    source: str | Path | None = None,
    val_size: int | None = None,
    split_seed: int = 0,
    train_subset: int | None = None,
    data_dir: str | Path | None = None,
) -> Dataset:
    """Read `source` (None: Fashion-MNIST, or the IDX folder `data_dir` that --data-dir names) and
    split it, with a seeded, stratified validation split carved from the training images
    (`val_size`, default `default_val_size`), and a test split of the same size carved likewise
    when the source has none.

    The split uses its own generator seeded with `split_seed`, so it is the same for the same seed
    whatever else has touched the global RNG. `train_subset` keeps the first N training images
    of the same stratified order after the validation split is carved, so validation numbers stay
    comparable between quick and full runs. Unlabelled images all go to `train`.
    """
    raw = _read_source(source, data_dir)
    where = raw.where
    _check_images(raw.train.images, where["train_images"])
    if raw.test is not None:
        _check_images(raw.test.images, where["test_images"], raw.train.images)
    names = None if raw.train.labels is None else _class_names(raw)
    mean, std = raw.stats or channel_stats(raw.train.images)
    _, channels, size, _ = raw.train.images.shape
    info = DataInfo(channels, size, mean, std, names)
    official, n = raw.train, len(raw.train)
    generator = torch.Generator().manual_seed(split_seed)

    if names is None:
        if val_size:
            raise UserError(f"validation size {val_size}: the images in {where['train_images']} have no labels, so "
                            "there is nothing to validate on; drop --val-size")
        order, val_size, test_size = torch.randperm(n, generator=generator), 0, 0
    else:
        val_size = default_val_size(n) if val_size is None else val_size
        test_size = val_size if raw.test is None else 0
        limit = n - 1 if raw.test is not None else (n - 1) // 2
        if not 0 <= val_size <= limit:
            twice = "" if raw.test is not None else ", twice: the data has no test split, so one is carved too"
            raise UserError(f"validation size {val_size} is out of range: pass 0 to {limit} (it is carved from the "
                            f"{n} training images in {where['train_images']}{twice})")
        order = stratified_order(official.labels, generator)
    val_idx, test_idx, train_idx = order[:val_size], order[val_size:val_size + test_size], order[val_size + test_size:]
    if train_subset is not None:
        if not 1 <= train_subset <= len(train_idx):
            raise UserError(
                f"--train-subset {train_subset} is out of range: pass 1 to {len(train_idx)} "
                f"(the training images left after carving {val_size + test_size} for validation"
                f"{' and testing' if test_size else ''})"
            )
        train_idx = train_idx[:train_subset]
    test = raw.test if raw.test is not None else _take(official, test_idx)
    name = str(source or data_dir or "Fashion-MNIST")
    return Dataset(_take(official, train_idx), _take(official, val_idx), test, info, name)


def read_images(path: str | Path) -> torch.Tensor:
    """Images to embed, uint8 (N, C, H, W): the image files of a folder in name order, an .npz
    file's `x` (or `x_train`) array, or an IDX file of images."""
    path = Path(path)
    if path.is_dir():
        files = _image_files(path)
        if not files:
            raise UserError(f"{path}: holds no image files ({', '.join(IMAGE_SUFFIXES)}); pass a folder of images, "
                            "an .npz or an IDX file")
        images = _stack_images(files)
    elif path.suffix == ".npz":
        arrays = _load_npz(path)
        key = next((k for k in ("x", "x_train") if k in arrays), None)
        if key is None:
            held = ", ".join(sorted(arrays)) or "nothing"
            raise UserError(f"{path}: lacks an x (or x_train) array of images (holds {held})")
        images = _npz_images(path, key, arrays[key])
    elif path.is_file():
        images = read_idx(path)
        if images.ndim != 3 or images.dtype != torch.uint8:
            found = "x".join(map(str, images.shape))
            raise UserError(f"{path}: holds {found} {images.dtype}, expected NxHxW uint8 images (IDX type 0x08)")
        images = images.unsqueeze(1)
    else:
        raise UserError(f"{path}: no such file or folder; pass a folder of images, an .npz or an IDX file")
    _check_images(images, path)
    return images
