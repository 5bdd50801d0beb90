"""Bad input through the real command (`fashionssl.cli.main`), table-driven: damaged data files,
invalid configs, foreign or malicious checkpoints, unwritable or full output directories, Ctrl-C.

Every case must end the same way: exit code 2 (130 for Ctrl-C), exactly one stderr line starting
`fashionssl: error:` that names the file or key at fault, no traceback, and every file that existed
before (the data set, an interrupted run's checkpoint and config) byte-identical afterwards.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import fashionssl
from fashionssl.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from fashionssl.cli import main
from fashionssl.config import Config
from fashionssl.data import FASHION_MNIST_INFO, FILES, read_idx
from fashionssl.methods import build_model
from fashionssl.methods.simclr import SimCLR
from fashionssl.runlog import MetricsLog
from fashionssl.train import pretrain

from conftest import quick_config, write_idx

SRC = Path(fashionssl.__file__).resolve().parents[1]
# A quick new run; case flags come after it, so they win (argparse keeps the last value).
QUICK = ["--encoder", "cnn", "--epochs", "1", "--batch-size", "128", "--train-subset", "512", "--val-size", "500",
         "--knn-every", "0"]


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory, small_data_dir) -> Path:
    """A 5-epoch run stopped by Ctrl-C during its second epoch: checkpoint after epoch 1."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    cfg = quick_config(out, small_data_dir, encoder="cnn", epochs=5, knn_every=0)
    steps = []

    def stop_in_second_epoch(self, step, total_steps):
        steps.append(step)
        if step == 5:  # 4 steps per epoch
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SimCLR, "after_step", stop_in_second_epoch)
        with pytest.raises(KeyboardInterrupt):
            pretrain(dataclasses.replace(cfg))
    assert load_checkpoint(out)["epoch"] == 1
    return out


@dataclasses.dataclass
class Workspace:
    tmp: Path
    data: Path  # a private copy of the small data set
    run: Path  # a private copy of the interrupted run
    new: Path  # where a new run would go

    def data_file(self, key: str) -> Path:
        return self.data / FILES[key]

    def rewrite_checkpoint(self, **changes) -> None:
        state = load_checkpoint(self.run)
        state.pop("format")
        for key, change in changes.items():
            state[key] = change(state[key])
        save_checkpoint(self.run / "checkpoint.pt", state)


def quick(ws: Workspace, *flags: str) -> list[str]:
    return ["pretrain", *QUICK, "--data-dir", str(ws.data), "--out", str(ws.new), *flags]


def labels_with(ws: Workspace, key: str, change) -> None:
    labels = read_idx(ws.data_file(key)).numpy().copy()
    write_idx(ws.data_file(key), change(labels))


def set_toml(ws: Workspace, text: str) -> Path:
    path = ws.tmp / "recipe.toml"
    path.write_text(text)
    return path


class Payload:
    """Unpickling this creates a marker file: stands in for any code a malicious checkpoint runs."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant_payload(ws: Workspace) -> None:
    torch.save({"format": FORMAT, "config": {}, "epoch": 1, "model": Payload(ws.tmp / "pwned")},
               ws.run / "checkpoint.pt")


def disk_full(monkeypatch: pytest.MonkeyPatch):
    """The atomic writer's writes fail with ENOSPC after some bytes reached the temp file."""
    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 a partial checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(torch, "save", save)


def metrics_disk_full(monkeypatch: pytest.MonkeyPatch):
    """Appending a line to metrics.jsonl fails with ENOSPC."""
    def log(self, step, **scalars):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
    monkeypatch.setattr(MetricsLog, "log", log)


def case(name, setup, words, rc=2):
    """setup(ws, monkeypatch) prepares the damage and returns the argv; words: what the line must name."""
    return pytest.param(setup, words, rc, id=name)


CASES = [
    # damaged or inconsistent data files
    case("truncated-images", lambda ws, mp: (ws.data_file("train_images").write_bytes(
        ws.data_file("train_images").read_bytes()[:-100]), quick(ws))[1],
        ["train-images-idx3-ubyte", "truncated"]),
    case("corrupt-gzip", lambda ws, mp: ((ws.data / (FILES["train_labels"] + ".gz")).write_bytes(
        gzip.compress(ws.data_file("train_labels").read_bytes())[:-30] + b"garbage"), quick(ws))[1],
        ["train-labels-idx1-ubyte.gz", "gzip"]),
    case("bad-magic", lambda ws, mp: (ws.data_file("test_labels").write_bytes(
        b"\x08" + ws.data_file("test_labels").read_bytes()[1:]), quick(ws))[1],
        ["t10k-labels-idx1-ubyte", "magic"]),
    case("trailing-bytes", lambda ws, mp: (ws.data_file("test_images").write_bytes(
        ws.data_file("test_images").read_bytes() + b"\0" * 7), quick(ws))[1],
        ["t10k-images-idx3-ubyte", "7 trailing bytes"]),
    case("empty-labels-file", lambda ws, mp: (ws.data_file("test_labels").write_bytes(b""), quick(ws))[1],
        ["t10k-labels-idx1-ubyte", "empty"]),
    case("missing-file", lambda ws, mp: (ws.data_file("test_labels").unlink(), quick(ws))[1],
        ["t10k-labels-idx1-ubyte", "{data}"]),
    case("label-count-mismatch", lambda ws, mp: (labels_with(ws, "train_labels", lambda y: y[:-1]), quick(ws))[1],
        ["train-labels-idx1-ubyte", "labels but"]),
    case("label-out-of-range", lambda ws, mp: (labels_with(ws, "train_labels", lambda y: np.where(
        np.arange(len(y)) == 17, 10, y)), quick(ws))[1], ["train-labels-idx1-ubyte", "label 10 at index 17"]),
    case("wrong-image-size", lambda ws, mp: (write_idx(ws.data_file("test_images"), np.zeros((1000, 32, 32))),
                                             quick(ws))[1], ["t10k-images-idx3-ubyte", "32x32"]),
    case("data-dir-is-a-file", lambda ws, mp: quick(ws, "--data-dir", str(ws.data_file("train_labels"))),
         ["train-labels-idx1-ubyte", "not a directory"]),
    # invalid configuration
    case("negative-lr", lambda ws, mp: quick(ws, "--lr", "-0.1"), ["lr", "-0.1"]),
    case("nan-lr", lambda ws, mp: quick(ws, "--lr", "nan"), ["lr", "nan"]),
    case("zero-batch", lambda ws, mp: quick(ws, "--batch-size", "0"), ["batch_size"]),
    case("batch-larger-than-data", lambda ws, mp: quick(ws, "--train-subset", "100"), ["batch_size 128", "100"]),
    case("val-size-larger-than-data", lambda ws, mp: quick(ws, "--val-size", "3000"), ["validation size 3000"]),
    case("unknown-toml-key", lambda ws, mp: quick(ws, "--config", str(set_toml(ws, "epochs = 1\nlearning_rate = 1\n"))),
         ["recipe.toml", "learning_rate"]),
    case("wrong-toml-type", lambda ws, mp: quick(ws, "--config", str(set_toml(ws, 'seed = "ten"\n'))),
         ["recipe.toml", "seed", "ten"]),
    case("invalid-toml", lambda ws, mp: quick(ws, "--config", str(set_toml(ws, "epochs = = 1\n"))),
         ["recipe.toml", "TOML"]),
    case("unknown-method-in-toml", lambda ws, mp: quick(ws, "--config", str(set_toml(ws, 'method = "swav2"\n'))),
         ["swav2"]),
    # checkpoints that are damaged, malicious or from something else
    case("resume-truncated-checkpoint", lambda ws, mp: ((ws.run / "checkpoint.pt").write_bytes(
        (ws.run / "checkpoint.pt").read_bytes()[:5000]), ["pretrain", "--resume", str(ws.run)])[1],
        ["checkpoint.pt"]),
    case("resume-pickled-code", lambda ws, mp: (plant_payload(ws), ["pretrain", "--resume", str(ws.run)])[1],
         ["checkpoint.pt", "refusing"]),
    case("resume-other-encoder", lambda ws, mp: (ws.rewrite_checkpoint(config=lambda c: c | {"encoder": "cnn-bn"}),
                                                 ["pretrain", "--resume", str(ws.run)])[1],
         ["checkpoint.pt", "method 'simclr' with encoder 'cnn-bn'"]),
    case("resume-other-method", lambda ws, mp: (ws.rewrite_checkpoint(  # byol's options: its own defaults
                                                    config=lambda c: c | {"method": "byol", "method_options": {}}),
                                                ["pretrain", "--resume", str(ws.run)])[1],
         ["checkpoint.pt", "method 'byol' with encoder 'cnn'"]),
    case("evaluate-other-method", lambda ws, mp: (ws.rewrite_checkpoint(config=lambda c: c | {"method": "moco"}),
                                                  ["evaluate", str(ws.run)])[1],
         ["checkpoint.pt", "method 'moco' with encoder 'cnn'"]),
    case("resume-unknown-saved-key", lambda ws, mp: (ws.rewrite_checkpoint(config=lambda c: c | {"ema": 0.9}),
                                                     ["pretrain", "--resume", str(ws.run)])[1],
         ["checkpoint.pt", "ema"]),
    case("resume-with-another-method", lambda ws, mp: ["pretrain", "--resume", str(ws.run), "--method", "byol"],
         ["--resume", "--method"]),
    case("new-run-into-existing-run", lambda ws, mp: quick(ws, "--out", str(ws.run)), ["{run}", "--resume"]),
    # output that cannot be written
    case("out-below-a-file", lambda ws, mp: quick(ws, "--out", str(ws.data_file("train_labels") / "run")),
         ["train-labels-idx1-ubyte/run"]),
    case("disk-full-at-checkpoint", lambda ws, mp: (disk_full(mp), ["pretrain", "--resume", str(ws.run)])[1],
         ["checkpoint.pt", "No space left on device", "untouched"]),
    case("disk-full-at-metrics", lambda ws, mp: (metrics_disk_full(mp), ["pretrain", "--resume", str(ws.run)])[1],
         ["metrics.jsonl", "No space left on device"]),
]


def snapshot(*directories: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for d in directories for p in sorted(d.rglob("*")) if p.is_file()}


def protected(ws: Workspace) -> dict[Path, bytes]:
    """What a failed command must leave byte-identical: the data, the run's checkpoint and config."""
    run_files = [ws.run / name for name in ("checkpoint.pt", "config.json", "versions.json")]
    return snapshot(ws.data) | {p: p.read_bytes() for p in run_files if p.exists()}


@pytest.mark.parametrize("setup, words, rc", CASES)
def test_bad_input_is_one_line_and_damages_nothing(setup, words, rc, tmp_path, small_data_dir, interrupted_run,
                                                   capsys, monkeypatch):
    ws = Workspace(tmp_path, tmp_path / "data", tmp_path / "run", tmp_path / "new")
    shutil.copytree(small_data_dir, ws.data)
    shutil.copytree(interrupted_run, ws.run)
    monkeypatch.chdir(tmp_path)
    argv = setup(ws, monkeypatch)
    before = protected(ws)

    code = main(argv)
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == rc, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fashionssl: error: "), err
    for word in words:
        assert word.format(data=ws.data, run=ws.run) in lines[0], (word, lines[0])
    assert protected(ws) == before
    assert not (ws.new / "checkpoint.pt").exists()
    assert not (tmp_path / "pwned").exists()  # a planted payload never ran
    assert not list(ws.run.glob(".checkpoint.pt.*"))  # no temp file left behind


def test_interrupted_fixture_resumes_to_completion(interrupted_run, tmp_path):
    """The run the cases damage is a real resumable run: undamaged, it resumes and finishes."""
    run = tmp_path / "run"
    shutil.copytree(interrupted_run, run)
    assert main(["pretrain", "--resume", str(run)]) == 0
    assert load_checkpoint(run)["epoch"] == 5


# --- Ctrl-C ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("target, name", [(torch, "save"), (MetricsLog, "log")], ids=["torch.save", "metrics log"])
def test_ctrl_c_inside_a_write_stops_the_run_after_it(tmp_path, interrupted_run, monkeypatch, capsys, python_sigint,
                                                      target, name):
    """SIGINT landing inside torch.save (a KeyboardInterrupt there broke the zip writer: exit 1 with
    a traceback) or inside the metrics/TensorBoard log (one there hung the writer thread's close):
    the write completes, and the run stops before its next step with the one-line Ctrl-C exit."""
    out = tmp_path / "run"
    shutil.copytree(interrupted_run, out)
    original, completed = getattr(target, name), []

    def interrupted(*args, **kwargs):
        if not completed:
            signal.raise_signal(signal.SIGINT)
        original(*args, **kwargs)
        completed.append(name)

    monkeypatch.setattr(target, name, interrupted)
    code = main(["pretrain", "--resume", str(out)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 130, err
    assert completed == [name], completed  # the write finished, and no other ran after it
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fashionssl: error: interrupted in epoch"), err
    saved = load_checkpoint(out)["epoch"]
    assert f"(after epoch {saved}; resume with --resume {out})" in lines[0]
    assert not list(out.glob(".checkpoint.pt.*"))


def test_ctrl_c_in_the_last_save_stops_before_evaluation(tmp_path, interrupted_run, monkeypatch, capsys, python_sigint):
    """Pressed while the last epoch's checkpoint is written: the run is complete, but `run` does not
    go on to evaluate; the line says so and names the finished checkpoint."""
    out = tmp_path / "run"
    shutil.copytree(interrupted_run, out)
    original = torch.save

    def interrupted(obj, *args, **kwargs):
        if obj["epoch"] == obj["config"]["epochs"]:
            signal.raise_signal(signal.SIGINT)
        original(obj, *args, **kwargs)

    monkeypatch.setattr(torch, "save", interrupted)
    code = main(["run", "--resume", str(out)])
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert code == 130, err
    assert load_checkpoint(out)["epoch"] == 5
    assert err.startswith("fashionssl: error: interrupted after the last epoch.") and "(after epoch 5;" in err, err
    assert not (out / "results.json").exists()


LONG_EPOCHS = 1000

def test_ctrl_c_exits_130_with_one_line_and_keeps_a_resumable_checkpoint(tmp_path, interrupted_run):
    """SIGINT to a running `python -m fashionssl pretrain --resume` in its second epoch."""
    out = tmp_path / "run"
    shutil.copytree(interrupted_run, out)
    # A run far too long to finish before the signal lands, however fast the machine (its 4 remaining
    # epochs take well under a second on an idle one).
    state = load_checkpoint(out)
    state.pop("format")
    state["config"]["epochs"] = LONG_EPOCHS
    save_checkpoint(out / "checkpoint.pt", state)
    before = (out / "checkpoint.pt").read_bytes()
    metrics = out / "metrics.jsonl"  # keep epoch 1's lines only, as the resumed run will
    metrics.write_text("".join(line for line in metrics.read_text().splitlines(keepends=True)
                               if json.loads(line)["step"] <= 4))

    def training_epoch_2() -> bool:  # the resumed attempt has logged a step of epoch 2 (steps 5 to 8)
        lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip().endswith("}")]
        return any(line["step"] > 4 and "loss" in line for line in lines)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    # SIGINT back to its default in the child: a test suite started in the background inherits it
    # ignored, and Python then keeps ignoring it (as `nohup` users want).
    proc = subprocess.Popen([sys.executable, "-m", "fashionssl", "pretrain", "--resume", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not training_epoch_2():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run ended or hung before epoch 2: {proc.communicate()[1]}")
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fashionssl: error: interrupted in epoch"), err
    saved = load_checkpoint(out)
    assert f"{out / 'checkpoint.pt'} (after epoch {saved['epoch']}; resume with --resume {out})" in lines[0]
    assert 1 <= saved["epoch"] < LONG_EPOCHS
    if saved["epoch"] == 1:  # (a busy machine may have finished epoch 2 before the signal landed)
        assert (out / "checkpoint.pt").read_bytes() == before
    assert not list(out.glob(".checkpoint.pt.*"))
    build_model(Config(**saved["config"]), FASHION_MNIST_INFO).load_state_dict(saved["model"])  # loads as --resume does
