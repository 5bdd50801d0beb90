"""Checkpoints that survive a crash at any moment and never run code when loaded.

Saving writes a temporary file in the same directory, fsyncs it and renames it over the old one,
so the previous checkpoint stays valid until the new one is complete. Loading uses
`torch.load(weights_only=True)`: only tensors and plain containers are accepted, so a checkpoint
carrying pickled code is refused instead of executed.
"""

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError

FORMAT = "fashionssl-checkpoint-1"
REQUIRED = ("config", "epoch", "model")  # what every reader of a checkpoint needs


def first_line(error: BaseException) -> str:
    """An exception's message cut to one line (some, like EOFError(), have none)."""
    lines = str(error).splitlines()
    return lines[0] if lines else type(error).__name__


def atomic_write(path: Path, write) -> None:
    """Call write(file_object) on a temp file beside `path`, fsync, then rename it over `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; the result should look like any other file
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    try:
        atomic_write(Path(path), lambda f: torch.save({**state, "format": FORMAT}, f))
    except OSError as e:
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}; the previous checkpoint is untouched") from None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory holding `checkpoint.pt`."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}: pass a run directory or its checkpoint.pt")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = resolve_checkpoint(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(f"refusing to load {path}: it holds objects other than tensors and plain data "
                        f"(possibly code), or is damaged; only load checkpoints you trust with other tools. ({first_line(e)})") from None
    except Exception as e:  # torch.load fails in many ways on files that are not checkpoints
        raise UserError(f"cannot read checkpoint {path}: {first_line(e)} (truncated or not a checkpoint)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise UserError(f"{path} is not a fashionssl checkpoint (format {FORMAT!r} expected)")
    missing = [key for key in REQUIRED if key not in state]
    if missing:
        raise UserError(f"{path} is an incomplete fashionssl checkpoint: it lacks {', '.join(missing)}")
    return state


def load_into(target: torch.nn.Module | torch.optim.Optimizer, saved: Any, path: str | Path, what: str) -> None:
    """`target.load_state_dict(saved)`, with a mismatch (another method, encoder or optimizer wrote
    the checkpoint) reported as a UserError naming the checkpoint and what it should have held."""
    try:
        target.load_state_dict(saved)
    except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise UserError(f"checkpoint {path} does not hold the state of {what}: {first_line(e)}") from None
