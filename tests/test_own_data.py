"""Datasets other than Fashion-MNIST, made here (never downloaded): an RGB image folder, an npz of
32x32 colour images, an IDX set of 26 classes and a folder of unlabelled images. Each goes through
the real command end to end: pretrain, evaluate, report (captioned with its own class names) and
embed. Then every kind of bad input, table-driven, each with its exact one-line error and exit 2.
"""

from __future__ import annotations

import io
import json
import string
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from matplotlib.text import Text
from PIL import Image

from fashionssl import data, report
from fashionssl.cli import main
from fashionssl.checkpoint import load_checkpoint, save_checkpoint
from fashionssl.data import FASHION_MNIST_INFO, FILES, load_dataset
from fashionssl.evaluate import load_trained
from fashionssl.errors import UserError

from conftest import write_idx

SHAPES = ("circle", "square", "stripes")
LETTERS = tuple(string.ascii_uppercase)  # the 26 classes of the IDX set


def class_images(rng: np.random.Generator, label: int, n: int, size: int, channels: int) -> np.ndarray:
    """n uint8 (n, size, size, channels) images of class `label`: a bright block whose position and
    colour depend on the class, on noise, so that a few steps of training can tell classes apart."""
    images = rng.integers(0, 60, (n, size, size, channels), dtype=np.uint8)
    row, column = divmod(label, 6)
    top, left = (3 * row) % (size - 8), (4 * column) % (size - 8)
    colour = np.array([255, 40 + 50 * (label % 4), 255 - 60 * (label % 3)][:channels], dtype=np.uint8)
    images[:, top:top + 8, left:left + 8] = colour
    return images


def labelled_arrays(num_classes: int, per_class: int, size: int, channels: int, seed: int):
    rng = np.random.default_rng(seed)
    x = np.concatenate([class_images(rng, c, per_class, size, channels) for c in range(num_classes)])
    y = np.repeat(np.arange(num_classes), per_class)
    return x, y


def save_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.squeeze(-1) if array.shape[-1] == 1 else array).save(path)


def image_folder(root: Path) -> Path:
    """root/train/<shape>/*.png (24 per class) and root/test/<shape>/*.png (8 per class), 32x32 RGB."""
    for split, per_class, seed in (("train", 24, 0), ("test", 8, 1)):
        x, y = labelled_arrays(len(SHAPES), per_class, 32, 3, seed)
        for i, (image, label) in enumerate(zip(x, y)):
            save_png(root / split / SHAPES[label] / f"{i:03d}.png", image)
    return root


def npz_file(directory: Path) -> Path:
    """32x32 colour images of 4 classes, with a test split and classes.txt beside the file."""
    directory.mkdir(parents=True, exist_ok=True)
    x_train, y_train = labelled_arrays(4, 30, 32, 3, 2)
    x_test, y_test = labelled_arrays(4, 10, 32, 3, 3)
    np.savez(directory / "colours.npz", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    (directory / "classes.txt").write_text("red\ngreen\nblue\nyellow\n")
    return directory / "colours.npz"


def idx_folder(directory: Path) -> Path:
    """28x28 grey images of 26 classes (letters, named in classes.txt) as the four raw IDX files."""
    directory.mkdir(parents=True, exist_ok=True)
    for prefix, per_class, seed in (("train", 12, 4), ("test", 4, 5)):
        x, y = labelled_arrays(len(LETTERS), per_class, 28, 1, seed)
        write_idx(directory / FILES[f"{prefix}_images"], x[..., 0])
        write_idx(directory / FILES[f"{prefix}_labels"], y)
    (directory / "classes.txt").write_text("\n".join(LETTERS) + "\n")
    return directory


def unlabelled_folder(root: Path) -> Path:
    """80 grey 28x28 PNG files, no labels."""
    x, _ = labelled_arrays(4, 20, 28, 1, 6)
    for i, image in enumerate(x):
        save_png(root / f"img{i:03d}.png", image)
    return root


DATASETS = {  # name: (maker, class names or None, the new images `embed` reads, given the source)
    "rgb-folder": (image_folder, SHAPES, lambda source: source / "test" / SHAPES[0]),
    "npz-colour": (npz_file, ("red", "green", "blue", "yellow"), lambda source: source),
    "idx-26-classes": (idx_folder, LETTERS, lambda source: source / FILES["test_images"]),
    "unlabelled": (unlabelled_folder, None, lambda source: source),
}
QUICK = ["--encoder", "cnn-bn", "--epochs", "1", "--batch-size", "32", "--knn-every", "1"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("own-data")
    return {name: maker(root / name) for name, (maker, _, _) in DATASETS.items()}


def figure_texts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every piece of text drawn on the report's figures, collected as they are written."""
    texts: list[str] = []
    write = report.Page.figure

    def record(self, fig, name, caption):
        texts.extend(t.get_text() for t in fig.findobj(Text))
        write(self, fig, name, caption)

    monkeypatch.setattr(report.Page, "figure", record)
    return texts


@pytest.mark.parametrize("name", DATASETS)
def test_pretrain_evaluate_report_embed_end_to_end(name, sources, tmp_path, capsys, monkeypatch):
    source, (_, names, new_images) = sources[name], DATASETS[name]
    run = tmp_path / "run"
    assert main(["pretrain", *QUICK, "--data", str(source), "--out", str(run)]) == 0

    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    if names is None:
        assert "not evaluated" in out and "has no labels" in results["not_evaluated"]
        assert "linear_probe_test_acc" not in results
    else:
        assert results["class_names"] == list(names)
        assert len(results["linear_probe_confusion"]) == len(names)
        assert 0 <= results["linear_probe_test_acc"] <= 1 and "linear probe, test" in out

    texts = figure_texts(monkeypatch)
    assert main(["report", str(run)]) == 0
    assert (run / "report" / "report.html").is_file()
    assert "T-shirt/top" not in texts
    if names is not None:
        assert set(names) <= set(texts)  # legend, confusion-matrix ticks, retrieval titles

    embeddings, images = tmp_path / "emb.npy", new_images(source)
    assert main(["embed", str(run), str(images), "-o", str(embeddings)]) == 0
    features = np.load(embeddings)
    assert features.dtype == np.float32 and features.shape[1] == 1152 and np.isfinite(features).all()
    assert len(features) == len(data.read_images(images))


def test_clip_captions_and_zero_shot_prompts_name_the_data_s_classes(sources, tmp_path, capsys):
    """clip on the image folder: captions and prompts from its class names, a vocabulary of their
    words that evaluation rebuilds from the checkpoint, zero-shot accuracy reported, and above
    chance (1/3) after 16 steps (seeds 0-3 measured: test 0.67, 1.0, 0.67, 0.67)."""
    run = tmp_path / "run"
    assert main(["pretrain", *QUICK, "--epochs", "8", "--method", "clip", "--data", str(sources["rgb-folder"]),
                 "--out", str(run)]) == 0
    assert load_checkpoint(run)["model"]["text_encoder.embedding.weight"].shape[0] == 17  # 15 words of SHAPES' captions
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    results = json.loads((run / "results.json").read_text())
    assert results["class_names"] == list(SHAPES) and results["label_use"] == "captions derive from labels"
    assert 0 <= results["zero_shot_val_acc"] <= 1 and 0 <= results["zero_shot_test_acc"] <= 1
    assert "zero-shot (class prompts), test" in out and results["zero_shot_test_acc"] > 0.5
    assert main(["report", str(run)]) == 0
    assert "zero-shot (test)" in (run / "report" / "report.html").read_text()


def test_embed_with_an_export_equals_embed_with_the_run(sources, tmp_path):
    run = tmp_path / "run"
    assert main(["pretrain", *QUICK, "--encoder", "cnn", "--data", str(sources["npz-colour"]), "--out", str(run)]) == 0
    assert main(["export", str(run)]) == 0
    assert (run / "export" / "labels_test.npy").is_file()
    by_run, by_export = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["embed", str(run), str(sources["npz-colour"]), "-o", str(by_run)]) == 0
    assert main(["embed", str(run / "export"), str(sources["npz-colour"]), "-o", str(by_export)]) == 0
    np.testing.assert_allclose(np.load(by_run), np.load(by_export), rtol=1e-5, atol=1e-5)
    assert np.load(by_run).shape == (120, 256)


def test_augment_preview_draws_colour_views_of_the_data(sources, tmp_path):
    out = tmp_path / "preview.png"
    assert main(["augment-preview", "--data", str(sources["rgb-folder"]), "--images", "3", "--views", "4",
                 "--out", str(out)]) == 0
    picture = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert (np.abs(picture[..., 0] - picture[..., 1]) > 40).any()  # drawn in colour


def test_loaded_datasets_take_names_channels_sizes_and_statistics_from_the_data(sources):
    folder = load_dataset(sources["rgb-folder"])
    assert folder.info.class_names == SHAPES and folder.info.channels == 3 and folder.info.size == 32
    assert folder.train.images.shape[1:] == (3, 32, 32) and len(folder.test) == 24
    assert len(folder.val) == 7  # default: 10% of the 72 training images
    pixels = torch.cat([folder.train.images, folder.val.images]).double() / 255
    np.testing.assert_allclose(folder.info.mean, pixels.mean(dim=(0, 2, 3)).numpy(), rtol=1e-9)
    np.testing.assert_allclose(folder.info.std, pixels.std(dim=(0, 2, 3), correction=0).numpy(), rtol=1e-6)
    colours = load_dataset(sources["npz-colour"])
    assert colours.info.class_names == ("red", "green", "blue", "yellow") and colours.info.channels == 3
    letters = load_dataset(sources["idx-26-classes"], val_size=26)
    assert letters.info.class_names == LETTERS and letters.info.channels == 1
    assert letters.val.labels.bincount().tolist() == [1] * 26
    unlabelled = load_dataset(sources["unlabelled"])
    assert unlabelled.info.class_names is None and len(unlabelled.train) == 80
    assert len(unlabelled.val) == len(unlabelled.test) == 0 and unlabelled.train.labels is None


def test_a_source_without_test_split_gets_one_carved_like_validation(tmp_path):
    x, y = labelled_arrays(3, 20, 28, 1, 7)
    np.savez(tmp_path / "d.npz", x_train=x[..., 0], y_train=y)
    dataset = load_dataset(tmp_path / "d.npz", val_size=6)
    assert (len(dataset.train), len(dataset.val), len(dataset.test)) == (48, 6, 6)
    assert dataset.test.labels.bincount().tolist() == [2, 2, 2]
    assert dataset.info.class_names == ("0", "1", "2")
    seen = torch.cat([dataset.train.images, dataset.val.images, dataset.test.images]).flatten(1)
    assert len(torch.unique(seen, dim=0)) == 60  # a partition: no image in two splits


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, the exact message


def corrupt(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


GREY = np.full((28, 28), 100, dtype=np.uint8)
RGB = np.full((28, 28, 3), 100, dtype=np.uint8)
NOISE = np.random.default_rng(0).integers(0, 256, (28, 28, 3), dtype=np.uint8)  # a PNG of 2.4 kB


def folder_with(root: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        corrupt(root / name, content)
    return root


def npz_with(root: Path, classes: str | None = None, **arrays) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    np.savez(root / "d.npz", **arrays)
    if classes is not None:
        (root / "classes.txt").write_text(classes)
    return root / "d.npz"


X = np.zeros((10, 28, 28), dtype=np.uint8)
Y = np.arange(10) % 2


def case(name, setup, message, command="pretrain"):
    """setup(tmp) -> the --data path (or argv list); message: the exact text after 'fashionssl: error: '."""
    return pytest.param(setup, message, command, id=name)


BAD = [
    case("empty-folder", lambda t: (t / "d").mkdir() or t / "d",
         "--data {t}/d: holds no images, no train/ folder and not the four IDX files (train-images-idx3-ubyte, "
         "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte); pass --data with a folder of IDX "
         "files, an .npz file, a folder root/train/<class>/*.png or a folder of unlabelled images"),
    case("missing-path", lambda t: t / "nowhere",
         "--data {t}/nowhere: no such file or folder; pass --data with a folder of IDX files, an .npz file, a folder "
         "root/train/<class>/*.png or a folder of unlabelled images"),
    case("class-without-images", lambda t: (folder_with(t / "d", {"train/a/1.png": png_bytes(GREY)}),
                                            (t / "d/train/b").mkdir())[0],
         "{t}/d/train/b: class 'b' has no images (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp); add some or "
         "remove the folder"),
    case("no-class-folders", lambda t: (t / "d/train").mkdir(parents=True) or t / "d",
         "{t}/d/train: no class folders; put each class's images in {t}/d/train/<class name>/"),
    case("corrupt-image", lambda t: folder_with(t / "d", {"a.png": png_bytes(GREY), "b.png": b"\x89PNG not really"}),
         "{t}/d/b.png: not a readable image (UnidentifiedImageError: cannot identify image file '{t}/d/b.png'); "
         "replace or remove the file"),
    case("truncated-image", lambda t: folder_with(t / "d", {"a.png": png_bytes(NOISE)[:-100]}),
         "{t}/d/a.png: not a readable image (OSError: image file is truncated); replace or remove the file"),
    case("mixed-sizes", lambda t: folder_with(t / "d", {"a.png": png_bytes(GREY),
                                                        "b.png": png_bytes(np.zeros((32, 32), np.uint8))}),
         "{t}/d/b.png: 32x32 grey but {t}/d/a.png is 28x28 grey; every image must have the same size and the same "
         "mode (grey or colour)"),
    case("mixed-modes", lambda t: folder_with(t / "d", {"a.png": png_bytes(GREY), "b.png": png_bytes(RGB)}),
         "{t}/d/b.png: 28x28 colour but {t}/d/a.png is 28x28 grey; every image must have the same size and the same "
         "mode (grey or colour)"),
    case("alpha-channel", lambda t: folder_with(t / "d", {"a.png": png_bytes(np.zeros((28, 28, 4), np.uint8))}),
         "{t}/d/a.png: image mode RGBA; fashionssl reads grey (L) or colour (RGB) images, convert it (e.g. Pillow's "
         "image.convert('RGB'))"),
    case("too-small", lambda t: folder_with(t / "d", {"a.png": png_bytes(np.zeros((16, 16), np.uint8))}),
         "{t}/d: images are 16x16 pixels; fashionssl trains on square images of 28 to 64 pixels: resize or crop them "
         "first"),
    case("label-out-of-range", lambda t: npz_with(t / "d", "a\nb\n", x_train=X, y_train=np.where(Y == 1, 5, 0)),
         "{t}/d/d.npz y_train: label 5 at index 1 is outside 0..1 (the data has 2 classes); fix the labels or list "
         "every class in classes.txt"),
    case("label-count", lambda t: npz_with(t / "d", x_train=X, y_train=Y[:9]),
         "{t}/d/d.npz y_train: holds 9 labels but {t}/d/d.npz x_train holds 10 images; every image needs one label"),
    case("npz-without-labels", lambda t: npz_with(t / "d", x_train=X),
         "{t}/d/d.npz: lacks y_train (holds x_train); save x_train (uint8 images), y_train (class indices) and "
         "optionally x_test, y_test"),
    case("npz-test-without-labels", lambda t: npz_with(t / "d", x_train=X, y_train=Y, x_test=X),
         "{t}/d/d.npz: lacks y_test (it has x_test) (holds x_test, x_train, y_train); save x_train (uint8 images), "
         "y_train (class indices) and optionally x_test, y_test"),
    case("npz-float-images", lambda t: npz_with(t / "d", x_train=X.astype(np.float32), y_train=Y),
         "{t}/d/d.npz: x_train holds 10x28x28 float32, expected uint8 images (N, H, W) or (N, H, W, C); scale them "
         "to 0..255 and save them as uint8"),
    case("not-an-npz-file", lambda t: corrupt(t / "d.csv", b"1,2,3"),
         "--data {t}/d.csv: not an .npz file; pass --data with a folder of IDX files, an .npz file, a folder "
         "root/train/<class>/*.png or a folder of unlabelled images"),
    case("npz-damaged", lambda t: corrupt(t / "d.npz", b"PK\x03\x04 damaged"),
         "{t}/d.npz: not a readable .npz file (BadZipFile: File is not a zip file); save it with numpy.savez"),
    case("class-without-training-images", lambda t: npz_with(t / "d", "a\nb\nc\n", x_train=X, y_train=Y * 2),
         "{t}/d/d.npz y_train: class 'b' (label 1) has no training images; add some, or renumber the labels (and "
         "classes.txt) without it"),
    case("smaller-than-the-batch", lambda t: npz_with(t / "d", x_train=np.zeros((20, 28, 28), np.uint8),
                                                      y_train=np.arange(20) % 2),
         "batch_size 32 is larger than the 16 training images; lower --batch-size"),
    case("val-size-on-unlabelled", lambda t: [*argv(t, folder_with(t / "d", {"a.png": png_bytes(GREY)})),
                                              "--val-size", "10"],
         "validation size 10: the images in {t}/d have no labels, so there is nothing to validate on; drop --val-size"),
    case("labels-method-on-unlabelled", lambda t: [*argv(t, folder_with(t / "d", {"a.png": png_bytes(GREY)})),
                                                   "--method", "supervised"],
         "method supervised trains with labels and the data has none; choose a self-supervised method, e.g. "
         "--method simclr"),
    case("clip-classes-that-read-alike", lambda t: [*argv(t, npz_with(t / "d", "Cat\ncat\n", x_train=X, y_train=Y)),
                                                    "--method", "clip"],
         "method clip names each class in its captions by its lower-cased words, and classes 'Cat' and 'cat' both "
         "read 'cat'; rename one of them"),
    case("data-and-data-dir", lambda t: [*argv(t, t), "--data-dir", str(t)],
         "config: data and data_dir both given; keep data (it reads IDX folders too)"),
]


def argv(tmp: Path, source: Path) -> list[str]:
    return ["pretrain", *QUICK, "--data", str(source), "--out", str(tmp / "run")]


@pytest.mark.parametrize(("setup", "message", "command"), BAD)
def test_bad_input_is_one_exact_line_and_exit_2(setup, message, command, tmp_path, capsys):
    made = setup(tmp_path)
    rc = main(made if isinstance(made, list) else argv(tmp_path, made))
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err == f"fashionssl: error: {message.format(t=tmp_path)}\n"


def test_a_run_refuses_data_unlike_what_it_was_trained_on(sources, tmp_path, capsys):
    """embed, evaluate and --resume check the images (and, resuming, the data itself) against the run's."""
    run = tmp_path / "run"
    assert main(["pretrain", *QUICK, "--encoder", "cnn", "--epochs", "2", "--data", str(sources["unlabelled"]),
                 "--out", str(run)]) == 0
    capsys.readouterr()
    colour = folder_with(tmp_path / "c", {"a.png": png_bytes(RGB)})
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, message in [
        (["embed", str(run), str(colour), "-o", str(tmp_path / "e.npy")],
         f"{colour}: 3-channel 28x28 images, but {run} takes 1-channel 28x28 ones; convert or resize them first"),
        (["embed", str(run), str(empty), "-o", str(tmp_path / "e.npy")],
         f"{empty}: holds no image files (.png, .jpg, .jpeg, .bmp, .gif, .tif, .tiff, .webp); pass a folder of "
         "images, an .npz or an IDX file"),
        (["evaluate", str(run), "--data", str(sources["rgb-folder"])],
         f"{sources['rgb-folder']} holds 3-channel 32x32 images but {run}/checkpoint.pt was trained on 1-channel "
         "28x28 ones; pass --data with images like those it was trained on"),
    ]:
        assert main(argv) == 2
        assert capsys.readouterr().err == f"fashionssl: error: {message}\n"
    state = load_checkpoint(run)
    state.pop("format")
    save_checkpoint(run / "checkpoint.pt", {**state, "epoch": 1, "data": {**state["data"], "mean": [0.5]}})
    assert main(["pretrain", "--resume", str(run)]) == 2
    assert capsys.readouterr().err == (
        f"fashionssl: error: {sources['unlabelled']} is not the data {run}/checkpoint.pt was trained on (its images, "
        "their statistics or its classes changed); resume with the same data, or start a new run\n")


def test_checkpoints_from_before_datasets_are_fashion_mnist_runs(trained_run, tmp_path):
    _, run_dir = trained_run
    state = load_checkpoint(run_dir)
    state.pop("format")
    del state["data"]  # as every checkpoint written before DataInfo existed
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    assert load_trained(tmp_path).info == FASHION_MNIST_INFO


# ---------------------------------------------------------------------------------------------
# Fuzzed image files: whatever the bytes, an image or a one-line UserError naming the file

VALID_PNG = png_bytes(RGB)


@settings(max_examples=200, deadline=None)
@given(content=st.one_of(st.binary(max_size=200), st.builds(
    lambda cut, flips, tail: bytes(b ^ flips.get(i, 0) for i, b in enumerate(VALID_PNG[:cut])) + tail,
    st.integers(0, len(VALID_PNG)), st.dictionaries(st.integers(0, len(VALID_PNG) - 1), st.integers(1, 255),
                                                     max_size=3), st.binary(max_size=8))))
def test_fuzzed_image_files_read_or_give_one_line(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("fuzz") / "x.png"
    path.write_bytes(content)
    try:
        array = data._read_image(path)
    except UserError as e:
        assert str(e).startswith(f"{path}: ") and "\n" not in str(e)
    else:
        assert array.dtype == np.uint8 and array.ndim in (2, 3)
