"""Tests for fashionssl.checkpoint: round trip, atomic replacement, refusal of pickled code,
damaged and foreign files, and path resolution."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from fashionssl.checkpoint import FORMAT, load_checkpoint, resolve_checkpoint, save_checkpoint
from fashionssl.errors import UserError


def sample_state(scale: float = 1.0) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "model": {"fc.weight": torch.randn(3, 4, generator=g) * scale, "fc.bias": torch.zeros(3),
                  "bn.num_batches_tracked": torch.tensor(7)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 0.1, "params": [0]}]},
        "epoch": 4,
        "config": {"method": "simclr", "lr": 2e-3, "train_subset": None, "method_options": {"t": 0.2},
                   "crop": [0.2, 1.0], "flag": True},
        "rng": torch.get_rng_state(),
    }


def assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    else:
        assert a == b and type(a) is type(b)


def test_round_trip(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"  # parent directory created on save
    state = sample_state()
    save_checkpoint(path, state)
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT
    assert_same({k: v for k, v in loaded.items() if k != "format"}, state)
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]  # no temp file left


def test_save_replaces_previous(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, sample_state(1.0) | {"epoch": 1})
    save_checkpoint(path, sample_state(2.0) | {"epoch": 2})
    loaded = load_checkpoint(path)
    assert loaded["epoch"] == 2
    assert_same(loaded["model"], sample_state(2.0)["model"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def failing_save(exc: BaseException):
    def save(obj, f, *args, **kwargs):
        junk = b"PK\x03\x04 half a checkpoint" * 100
        if isinstance(f, (str, os.PathLike)):  # (a non-atomic implementation would pass the path)
            Path(f).write_bytes(junk)
        else:
            f.write(junk)  # some bytes reach the file ...
        raise exc  # ... then the write fails midway
    return save


@pytest.mark.parametrize("exc, expected", [
    (RuntimeError("crash inside torch.save"), RuntimeError),
    (KeyboardInterrupt(), KeyboardInterrupt),
    (OSError(28, "No space left on device"), UserError),
])
def test_failed_write_keeps_previous_checkpoint(tmp_path, monkeypatch, exc, expected):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, sample_state() | {"epoch": 1})
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", failing_save(exc))
    with pytest.raises(expected) as info:
        save_checkpoint(path, sample_state(5.0) | {"epoch": 2})
    if expected is UserError:
        assert "untouched" in str(info.value) and "No space left" in str(info.value)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path)["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # temp file removed


class Payload:
    """Unpickling this calls Path.touch(marker): stands in for os.system or any other code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickled_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    torch.save({"format": FORMAT, "model": {}, "epoch": 1, "x": Payload(marker)}, path)
    assert not marker.exists()
    with pytest.raises(UserError, match="refusing"):
        load_checkpoint(path)
    assert not marker.exists()
    # the payload is live: a plain (unsafe) unpickle does run it, so the check above means something
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pickled_code_in_legacy_format_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "checkpoint.pt"
    with open(path, "wb") as f:
        pickle.dump({"format": FORMAT, "x": Payload(marker)}, f, protocol=2)  # a bare pickle, not a torch zip file
    with pytest.raises(UserError):
        load_checkpoint(path)
    assert not marker.exists()


def test_truncated_files_are_refused(tmp_path):
    full = tmp_path / "full.pt"
    save_checkpoint(full, sample_state())
    data = full.read_bytes()
    bad = tmp_path / "bad.pt"
    for n in sorted({1, 2, 3, 10, 64, 100, len(data) // 3, len(data) // 2, len(data) - 22, len(data) - 1}):
        bad.write_bytes(data[:n])
        with pytest.raises(UserError, match="bad.pt"):
            load_checkpoint(bad)


def test_empty_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"")
    with pytest.raises(UserError):
        load_checkpoint(path)


def test_garbage_file_is_refused(tmp_path):
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(os.urandom(16) + b"not a checkpoint" * 10)
    with pytest.raises(UserError):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [{"a": 1}, [1, 2, 3], torch.zeros(3), {"format": "other-format-9", "epoch": 1}])
def test_foreign_torch_files_are_refused(tmp_path, content):
    path = tmp_path / "checkpoint.pt"
    torch.save(content, path)
    with pytest.raises(UserError, match="not a fashionssl checkpoint"):
        load_checkpoint(path)


def test_resolve_accepts_run_directory(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, sample_state())
    assert resolve_checkpoint(tmp_path) == path
    assert resolve_checkpoint(str(path)) == path
    assert load_checkpoint(tmp_path)["epoch"] == 4


def test_missing_paths(tmp_path):
    with pytest.raises(UserError, match="no checkpoint"):
        resolve_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")
    with pytest.raises(UserError, match="no checkpoint"):
        load_checkpoint(tmp_path)  # a directory without checkpoint.pt


def test_unwritable_destination_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot write checkpoint"):
        save_checkpoint(blocker / "checkpoint.pt", sample_state())  # parent is a file
