"""Shared fixtures: single-threaded unit tests, and small real data for the integration tests.

Training tests use small real data: a copy of the first few thousand Fashion-MNIST images written as
raw IDX files, so that loading and, above all, evaluation (which always uses every image of the
data directory) take seconds instead of minutes.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from fashionssl.augment import make_config
from fashionssl.config import Config
from fashionssl.data import CLASSES_FILE, FASHION_MNIST_CLASSES, FASHION_MNIST_INFO, FILES, find_data_dir, load_dataset, read_idx
from fashionssl import kernels
from fashionssl.encoders import build_encoder
from fashionssl.probe import accuracy, extract_features, knn_predict


def pytest_configure(config):
    """Under pytest-xdist (`make test`), each worker takes its share of the intra-op threads, so
    that the workers do not spin-wait on each other's cores. The first process builds the C++
    kernel, so that no test's subprocess prints that it is building it."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, torch.get_num_threads() // workers))
    kernels.cpu_lanes()  # builds the C++ kernel (once per machine) before any test or subprocess needs it


@pytest.fixture(scope="module")
def single_thread():
    """Tiny problems: one intra-op thread avoids thread spin-waits on a shared, busy machine.
    Used by the unit-test modules through `pytestmark = pytest.mark.usefixtures("single_thread")`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def python_sigint():
    """Python's own Ctrl-C handler, whatever the suite inherited (a suite started in the background
    ignores SIGINT)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


SMALL_TRAIN = 3000  # official training images kept in the small data directory
SMALL_TEST = 1000


def write_idx(path: Path, array: np.ndarray) -> None:
    """A raw (uncompressed) IDX file: magic 0x0000 + type 0x08 (uint8) + ndim, big-endian dims, payload."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, dtype=">u4").tobytes()
    path.write_bytes(header + array.tobytes())


@pytest.fixture
def benchmark_script(monkeypatch):
    """Loads a script of benchmarks/ by name as a module, to test its functions; benchmarks/ goes on
    sys.path, as when the script runs (sweep.py imports validation_scores)."""
    folder = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(folder))

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load


@pytest.fixture(scope="session")
def small_data_dir(tmp_path_factory) -> Path:
    """The first SMALL_TRAIN training and SMALL_TEST test images of the real Fashion-MNIST, with its
    class names in classes.txt (a copy elsewhere is just an IDX folder)."""
    real = find_data_dir()
    directory = tmp_path_factory.mktemp("fashion-mnist-small")
    for key, n in (("train_images", SMALL_TRAIN), ("train_labels", SMALL_TRAIN),
                   ("test_images", SMALL_TEST), ("test_labels", SMALL_TEST)):
        candidates = [real / FILES[key], real / (FILES[key] + ".gz")]
        source = next(p for p in candidates if p.is_file())
        write_idx(directory / FILES[key], read_idx(source)[:n].numpy())
    (directory / CLASSES_FILE).write_text("\n".join(FASHION_MNIST_CLASSES) + "\n")
    return directory


def quick_config(out: Path, data_dir: Path, **overrides) -> Config:
    """A run of a few seconds: 512 images, batch 128 (4 steps per epoch), one epoch, a step line
    per step and a kNN check with a 500-image bank after every epoch."""
    values = dict(encoder="cnn-bn", epochs=1, batch_size=128, train_subset=512, val_size=500,
                  knn_every=1, knn_bank_size=500, log_every=1, eval_batch_size=1024,
                  data_dir=str(data_dir), out=str(out))
    values.update(overrides)
    return Config(**values)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, small_data_dir) -> tuple[Config, Path]:
    """One finished quick run, shared by the tests that only read it: (its config, its run dir).

    Tests must not modify the directory, except evaluation adding results.json.
    """
    from fashionssl.train import pretrain

    cfg = quick_config(tmp_path_factory.mktemp("trained") / "run", small_data_dir)
    run_dir = pretrain(dataclasses.replace(cfg))
    return cfg, run_dir


# Short real runs of every method (tests/test_methods.py, tests/test_multicrop_swav_dino.py): 2048
# images, 3 epochs of batch 64, milder crops; each must beat its untrained encoder on kNN.
SHORT_RUN = dict(encoder="cnn-bn", epochs=3, batch_size=64, train_subset=2048, val_size=1000, knn_every=0,
                 augment_options={"crop_scale": [0.5, 1.0]}, seed=0)
SHORT_RUN_MARGIN = 0.01  # kNN accuracy a short run must gain over the untrained encoder


@pytest.fixture(scope="session")
def knn_setup():
    """(knn_accuracy(backbone) on SHORT_RUN's data, the untrained encoder's accuracy) for the short-run tests."""
    data = load_dataset(None, SHORT_RUN["val_size"], train_subset=SHORT_RUN["train_subset"])
    aug = make_config("default")
    device = torch.device("cpu")

    def knn_accuracy(backbone):
        bank = extract_features(backbone, data.train.images, aug, device)
        queries = extract_features(backbone, data.val.images, aug, device)
        return accuracy(knn_predict(bank, data.train.labels, queries), data.val.labels)

    torch.manual_seed(SHORT_RUN["seed"])
    return knn_accuracy, knn_accuracy(build_encoder(SHORT_RUN["encoder"]))


def short_run(name: str, out: Path, **overrides):
    """Train `name` on SHORT_RUN (+ overrides) into `out`; returns (trained model, per-epoch metric lines),
    after checking every epoch was logged and the loss went down."""
    from fashionssl.checkpoint import load_checkpoint
    from fashionssl.methods import build_model
    from fashionssl.train import pretrain

    cfg = Config(method=name, out=str(out), **{**SHORT_RUN, **overrides})
    run_dir = pretrain(cfg)
    model = build_model(cfg, FASHION_MNIST_INFO)
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    epochs = [e for e in lines if "epoch_loss" in e]
    assert len(epochs) == cfg.epochs and epochs[-1]["epoch_loss"] < epochs[0]["epoch_loss"]
    return model, epochs
