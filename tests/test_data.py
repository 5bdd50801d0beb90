"""Tests for fashionssl.data: the real Fashion-MNIST files, synthetic IDX files, and fuzzed bytes."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fashionssl import data
from fashionssl.data import FILES, find_data_dir, load_dataset, read_idx
from fashionssl.errors import UserError

REAL_DIR = Path("/usr/share/datasets/fashion-mnist")
CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode `array` as a valid IDX file: magic, big-endian uint32 dims, big-endian payload."""
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, CODES[big.dtype.str[1:]], big.ndim]) + np.array(big.shape, dtype=">u4").tobytes()
    return header + big.tobytes()


def write(path: Path, content: bytes) -> Path:
    """Write `content` to `path`, gzipping it first if the name ends in .gz."""
    path.write_bytes(gzip.compress(content) if path.suffix == ".gz" else content)
    return path


def make_dataset(directory: Path, gz: bool = True, **override: np.ndarray) -> Path:
    """Write a small valid Fashion-MNIST look-alike (40 train, 20 test); `override` replaces FILES keys."""
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train_images": np.arange(40 * 28 * 28, dtype=np.uint8).reshape(40, 28, 28),
        "train_labels": np.arange(40, dtype=np.uint8) % 10,
        "test_images": np.zeros((20, 28, 28), dtype=np.uint8),
        "test_labels": np.arange(20, dtype=np.uint8) % 10,
    } | override
    for key, array in arrays.items():
        write(directory / (FILES[key] + (".gz" if gz else "")), idx_bytes(array))
    return directory


@pytest.fixture(autouse=True)
def no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    """A $FASHIONSSL_DATA in the developer's shell must not change what these tests see."""
    monkeypatch.delenv(data.ENV_VAR, raising=False)


# ---------------------------------------------------------------------------------------------
# Real files


@pytest.fixture(scope="module")
def real() -> data.Dataset:
    if not REAL_DIR.is_dir():
        pytest.skip(f"real Fashion-MNIST not installed at {REAL_DIR} (apt-get install dataset-fashion-mnist)")
    return load_dataset(REAL_DIR)


def rows(*splits: data.Split) -> np.ndarray:
    """Each image with its label appended, as one sortable byte string per sample."""
    images = torch.cat([s.images.reshape(len(s), -1) for s in splits]).numpy()
    labels = torch.cat([s.labels for s in splits]).numpy().astype(np.uint8)[:, None]
    return np.sort(np.ascontiguousarray(np.hstack([images, labels])).view(np.dtype((np.void, 785))).ravel())


def test_real_shapes_and_dtypes(real: data.Dataset) -> None:
    assert len(real.train) + len(real.val) == 60000 and len(real.val) == 5000 and len(real.test) == 10000
    for split in (real.train, real.val, real.test):
        assert split.images.shape == (len(split), 1, 28, 28) and split.images.dtype == torch.uint8
        assert split.labels.shape == (len(split),) and split.labels.dtype == torch.int64
        assert 0 <= split.labels.min() and split.labels.max() <= 9
    assert len(data.FASHION_MNIST_CLASSES) == 10 and data.FASHION_MNIST_CLASSES[9] == "Ankle boot"
    assert real.info.class_names == tuple("0123456789")  # a folder named explicitly: its own names or numbers
    assert real.info.channels == 1 and real.info.size == 28
    assert (round(real.info.mean[0], 4), round(real.info.std[0], 4)) == (0.2860, 0.3530)


def test_real_found_by_default_has_fashion_mnist_class_names(real: data.Dataset) -> None:
    assert load_dataset(val_size=0).info.class_names == data.FASHION_MNIST_CLASSES


def test_real_official_train_has_6000_per_class_and_val_is_stratified(real: data.Dataset) -> None:
    official = read_idx(REAL_DIR / "train-labels-idx1-ubyte.gz").long()
    assert official.bincount().tolist() == [6000] * 10
    assert real.val.labels.bincount().tolist() == [500] * 10


def test_real_train_and_val_partition_the_official_train_set(real: data.Dataset) -> None:
    official = data.Split(
        read_idx(REAL_DIR / "train-images-idx3-ubyte.gz").unsqueeze(1), read_idx(REAL_DIR / "train-labels-idx1-ubyte.gz").long()
    )
    assert np.array_equal(rows(real.train, real.val), rows(official))
    # different images, so val is not just the head of the file
    assert not torch.equal(real.val.images, official.images[:5000])


def test_real_split_depends_only_on_split_seed(real: data.Dataset) -> None:
    torch.manual_seed(1234)  # the global RNG must not matter
    again = load_dataset(REAL_DIR, split_seed=0)
    other = load_dataset(REAL_DIR, split_seed=1)
    assert torch.equal(again.val.images, real.val.images) and torch.equal(again.train.labels, real.train.labels)
    assert not torch.equal(other.val.images, real.val.images)


def test_real_val_size_and_train_subset(real: data.Dataset) -> None:
    small = load_dataset(REAL_DIR, val_size=1000, train_subset=2000)
    assert len(small.val) == 1000 and len(small.train) == 2000 and len(small.test) == 10000
    assert small.train.labels.bincount().tolist() == [200] * 10
    subset = load_dataset(REAL_DIR, train_subset=300)
    assert torch.equal(subset.val.images, real.val.images)  # val untouched by the subset
    assert torch.equal(subset.train.images, real.train.images[:300])


# ---------------------------------------------------------------------------------------------
# read_idx on synthetic files


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trip(tmp_path: Path, dtype: str, suffix: str) -> None:
    array = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    tensor = read_idx(write(tmp_path / f"x{suffix}", idx_bytes(array)))
    assert tensor.shape == (2, 3, 4)
    np.testing.assert_array_equal(tensor.numpy(), array)
    assert tensor.numpy().dtype == array.dtype.newbyteorder("=")


VALID = idx_bytes(np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4))  # 16-byte header + 24-byte payload

BAD_FILES = {  # case: (file name, bytes on disk, expected part of the message)
    "bad magic": ("x", b"\x01" + VALID[1:], "bad magic number"),
    "unsupported dtype": ("x", VALID[:2] + b"\x0a" + VALID[3:], "unsupported IDX data type code 0x0A"),
    "zero dimensions": ("x", VALID[:3] + b"\x00", "0 dimensions"),
    "empty array": ("x", VALID[:4] + b"\x00\x00\x00\x00" + VALID[8:16], "empty 0x3x4 array"),
    "truncated payload": ("x", VALID[:-1], "truncated: header says 2x3x4 (24 bytes) but file holds 23"),
    "truncated payload gz": ("x.gz", gzip.compress(VALID[:20]), "header says 2x3x4 (24 bytes) but file holds 4"),
    "trailing bytes": ("x", VALID + b"\x00\x00", "2 trailing bytes"),
    "truncated header": ("x", VALID[:10], "truncated header: 3 dimensions need 16"),
    "truncated magic": ("x", VALID[:3], "truncated header: 3 bytes"),
    "empty file": ("x", b"", "file is empty"),
    "empty file gz": ("x.gz", b"", "file is empty"),
    "corrupt gzip": ("x.gz", b"not gzip at all" * 4, "not a valid gzip file"),
    "truncated gzip": ("x.gz", gzip.compress(VALID)[:-12], "not a valid gzip file"),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_read_idx_refuses_damaged_files(tmp_path: Path, case: str) -> None:
    name, content, expected = BAD_FILES[case]
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message and expected in message and "\n" not in message
    assert "--data-dir" in message  # says how to fix it


def test_read_idx_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="nope.gz: cannot read file"):
        read_idx(tmp_path / "nope.gz")


# ---------------------------------------------------------------------------------------------
# load_dataset consistency checks on synthetic data sets

BAD_SETS = {
    "count mismatch": (
        {"train_labels": np.zeros(39, dtype=np.uint8)},
        "train-labels-idx1-ubyte",
        "holds 39 labels but train-images-idx3-ubyte.gz holds 40 images",
    ),
    "label 10": (
        {"test_labels": np.array([0, 1, 2, 10] + [0] * 16, dtype=np.uint8)},
        "t10k-labels-idx1-ubyte",
        "label 10 at index 3 is outside 0..9",
    ),
    "label 255 leaves classes 1..254 empty": (
        {"train_labels": np.array([255] + [0] * 39, dtype=np.uint8)},
        "train-labels-idx1-ubyte",
        "class '1' (label 1) has no training images; add some, or renumber the labels (and classes.txt) without it",
    ),
    "negative label": (
        {"train_labels": np.array([0, -1] + [0] * 38, dtype=np.int8)},
        "train-labels-idx1-ubyte",
        "label -1 at index 1",
    ),
    "32x32 images": (
        {"test_images": np.zeros((20, 32, 32), dtype=np.uint8)},
        "t10k-images-idx3-ubyte",
        "images are 1x32x32 (channels x height x width) but the training images are 1x28x28",
    ),
    "2-d images": ({"train_images": np.zeros((40, 784), dtype=np.uint8)}, "train-images-idx3-ubyte", "40x784"),
    "float images": (
        {"train_images": np.zeros((40, 28, 28), dtype=np.float32)},
        "train-images-idx3-ubyte",
        "torch.float32 images",
    ),
    "labels ndim 3": (
        {"train_labels": np.zeros((40, 1, 1), dtype=np.uint8)},
        "train-labels-idx1-ubyte",
        "holds 40x1x1 torch.uint8 labels",
    ),
    "float labels": ({"test_labels": np.zeros(20, dtype=np.float64)}, "t10k-labels-idx1-ubyte", "torch.float64 labels"),
}


@pytest.mark.parametrize("case", BAD_SETS)
def test_load_refuses_inconsistent_files(tmp_path: Path, case: str) -> None:
    override, file_name, expected = BAD_SETS[case]
    make_dataset(tmp_path, **override)
    with pytest.raises(UserError) as info:
        load_dataset(tmp_path, val_size=10)
    message = str(info.value)
    assert str(tmp_path / file_name) in message and expected in message and "\n" not in message


def test_load_synthetic_raw_files(tmp_path: Path) -> None:
    ds = load_dataset(make_dataset(tmp_path, gz=False), val_size=10, split_seed=3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (30, 10, 20)
    assert ds.val.labels.bincount(minlength=10).tolist() == [1] * 10
    assert ds.train.labels.dtype == ds.test.labels.dtype == torch.int64


def test_split_of_class_sorted_file_is_stratified_and_shuffled(tmp_path: Path) -> None:
    make_dataset(
        tmp_path,
        train_images=np.zeros((1000, 28, 28), dtype=np.uint8),
        train_labels=np.repeat(np.arange(10, dtype=np.uint8), 100),
    )
    ds = load_dataset(tmp_path, val_size=200, train_subset=500)
    assert ds.val.labels.bincount().tolist() == [20] * 10
    assert ds.train.labels.bincount().tolist() == [50] * 10
    # no fixed repeating class pattern (a random order repeats a class 10 places on ~10% of the time)
    assert (ds.train.labels[:-10] == ds.train.labels[10:]).float().mean() < 0.3


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"val_size": -1}, "validation size -1 is out of range"),
        ({"val_size": 40}, r"validation size 40 is out of range: pass 0 to 39 \(it is carved from the 40"),
        ({"train_subset": 0}, "--train-subset 0 is out of range: pass 1 to 30"),
        ({"train_subset": 31}, "--train-subset 31 is out of range"),
    ],
)
def test_load_refuses_bad_sizes(tmp_path: Path, kwargs: dict[str, int], expected: str) -> None:
    make_dataset(tmp_path)
    with pytest.raises(UserError, match=expected):
        load_dataset(tmp_path, **{"val_size": 10, **kwargs})


def test_load_edge_sizes(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    assert len(load_dataset(tmp_path, val_size=0).val) == 0
    assert len(load_dataset(tmp_path, val_size=39, train_subset=1).train) == 1


# ---------------------------------------------------------------------------------------------
# find_data_dir


def test_find_data_dir_explicit_missing_files_listed(tmp_path: Path) -> None:
    make_dataset(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(UserError) as info:
        find_data_dir(tmp_path)  # even though the real data may exist elsewhere
    message = str(info.value)
    assert f"--data-dir {tmp_path} lacks train-labels-idx1-ubyte, t10k-images-idx3-ubyte" in message
    assert "train-images" not in message and "apt-get install dataset-fashion-mnist" in message


def test_find_data_dir_explicit_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a directory"):
        find_data_dir(tmp_path / "absent")


def test_find_data_dir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path / "env")
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path / "env"))
    assert find_data_dir() == tmp_path / "env"
    assert find_data_dir(make_dataset(tmp_path / "flag")) == tmp_path / "flag"  # the flag wins
    monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
    with pytest.raises(UserError, match=r"\$FASHIONSSL_DATA .* lacks train-images-idx3-ubyte"):
        find_data_dir()


def test_find_data_dir_raw_files_and_cwd_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(data, "DEFAULT_DATA_DIRS", (str(tmp_path / "absent"), "data/FashionMNIST/raw"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"not found in .*absent, data/FashionMNIST/raw; sudo apt-get install"):
        find_data_dir()
    make_dataset(tmp_path / "data/FashionMNIST/raw", gz=False)
    assert find_data_dir() == Path("data/FashionMNIST/raw")


# ---------------------------------------------------------------------------------------------
# Fuzzing: whatever the bytes, read_idx returns a tensor or raises UserError


SAMPLES = [
    idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4)),
    idx_bytes(np.arange(5, dtype=np.uint8)),
    idx_bytes(np.arange(6, dtype=">i4").reshape(3, 2)),
    idx_bytes(np.linspace(0, 1, 4, dtype=">f8").reshape(1, 2, 1, 2)),
]


def read_or_user_error(path: Path) -> None:
    try:
        assert isinstance(read_idx(path), torch.Tensor)
    except UserError as e:
        assert str(path) in str(e)


@st.composite
def mutated_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A valid IDX file, maybe gzipped, then truncated, with bytes flipped and/or garbage appended."""
    gz = draw(st.booleans())
    content = bytearray(gzip.compress(draw(st.sampled_from(SAMPLES))) if gz else draw(st.sampled_from(SAMPLES)))
    for op in draw(st.lists(st.sampled_from(["truncate", "flip", "append"]), max_size=3)):
        if op == "truncate":
            del content[draw(st.integers(0, len(content))) :]
        elif op == "flip" and content:
            content[draw(st.integers(0, len(content) - 1))] ^= draw(st.integers(1, 255))
        elif op == "append":
            content += draw(st.binary(min_size=1, max_size=8))
    return ("x.gz" if gz else "x"), bytes(content)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["x", "x.gz"]), content=st.binary(max_size=64))
def test_read_idx_random_bytes(tmp_path_factory: pytest.TempPathFactory, name: str, content: bytes) -> None:
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(content)
    read_or_user_error(path)


@settings(max_examples=300, deadline=None)
@given(file=mutated_files())
def test_read_idx_mutated_files(tmp_path_factory: pytest.TempPathFactory, file: tuple[str, bytes]) -> None:
    path = tmp_path_factory.mktemp("fuzz") / file[0]
    path.write_bytes(file[1])
    read_or_user_error(path)


FAULTS = ["magic", "code", "ndim", "dim", "header", "payload", "gzip"]


@st.composite
def structured_idx_files(draw: st.DrawFn) -> tuple[str, bytes, tuple[int, ...] | None]:
    """An IDX file built field by field from a valid one, with zero to three fields made wrong:
    magic bytes, type code, number of dimensions, a dimension (0 or >= 2**31), a header cut short,
    a payload a few bytes short or long, a damaged gzip stream. Returns (name, bytes, the shape a
    reader must return if no field was made wrong, else None)."""
    faults = set(draw(st.lists(st.sampled_from(FAULTS), max_size=3)))
    code = draw(st.sampled_from(list(CODES.values())))
    dims = draw(st.lists(st.integers(1, 5), min_size=1, max_size=4))
    ndim = len(dims)
    magic = b"\0\0"
    if "magic" in faults:
        magic = draw(st.sampled_from([b"\x01\0", b"\0\x08", b"\xff\xff", b"\x1f\x8b"]))
    if "code" in faults:
        code = draw(st.integers(0, 255).filter(lambda c: c not in CODES.values()))
    if "ndim" in faults:
        ndim = draw(st.sampled_from([0, ndim - 1, ndim + 1, 65, 255]))
    if "dim" in faults:
        dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from([0, 2**31, 2**32 - 1]))
    header = magic + bytes([code, ndim]) + np.array(dims, dtype=">u4").tobytes()
    if "header" in faults:
        header = header[:draw(st.integers(0, len(header) - 1))]
    itemsize = {v: np.dtype(k).itemsize for k, v in CODES.items()}.get(code, 1)
    size = int(np.prod(dims, dtype=np.float64)) * itemsize
    delta = draw(st.sampled_from([-1, 1, -itemsize, 3])) if "payload" in faults else 0
    length = max(0, size + delta) if size < 2**16 else 16  # (a huge declared size: a few bytes, refused)
    content = header + bytes([draw(st.integers(0, 255))]) * length
    name = "x"
    if "gzip" in faults or draw(st.booleans()):
        name, content = "x.gz", bytearray(gzip.compress(content))
        if "gzip" in faults:
            damage = draw(st.sampled_from(["flip", "truncate", "append"]))
            if damage == "flip":
                content[draw(st.integers(0, len(content) - 1))] ^= draw(st.integers(1, 255))
            elif damage == "truncate":
                del content[draw(st.integers(0, len(content) - 1)):]
            else:
                content += draw(st.binary(min_size=1, max_size=16))
    return name, bytes(content), None if faults else tuple(dims)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-structured")


@settings(max_examples=3000, deadline=None)
@given(file=structured_idx_files())
def test_read_idx_structured_fuzz_only_user_errors(fuzz_dir: Path, file: tuple[str, bytes, tuple[int, ...] | None]) -> None:
    """Thousands of near-valid files: a valid one is read with its declared shape, anything else
    (including damage a reader cannot see, like a flipped gzip mtime byte) is read or refused with a
    one-line UserError naming the file; no other exception escapes."""
    name, content, shape = file
    path = fuzz_dir / name
    path.write_bytes(content)
    try:
        tensor = read_idx(path)
    except UserError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        assert shape is None, f"a valid {shape} file was refused: {e}"
    else:
        assert shape is None or tuple(tensor.shape) == shape
