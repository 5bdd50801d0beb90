"""What a run directory records: config, versions, metrics (JSON lines and TensorBoard), results."""

import json
import math
import platform
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import __version__
from .checkpoint import atomic_write
from .errors import UserError


def write_json(path: Path, data: Any) -> None:
    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2, default=str) + "\n").encode()))


def versions(device: torch.device) -> dict[str, str]:
    info = {"fashionssl": __version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "platform": platform.platform(), "device": str(device),
            "threads": str(torch.get_num_threads())}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    return info


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every line of a run directory's metrics.jsonl, in order; a missing or damaged file is a UserError."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"no metrics.jsonl in {run_dir}: pass run directories written by `fashionssl pretrain`")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: line {e.lineno} is not JSON ({e.msg}); the file is damaged") from None


def epoch_lines(run_dir: str | Path) -> list[dict]:
    """The per-epoch summary lines of metrics.jsonl (epoch, epoch_seconds, epoch_images_per_s, ...)."""
    return [line for line in read_metrics(run_dir) if "epoch_seconds" in line]


def line_step(line: str) -> float:
    """The step of a metrics.jsonl line; infinite for a torn line, which no checkpoint covers."""
    try:
        return json.loads(line).get("step", 0)
    except ValueError:
        return math.inf


class MetricsLog:
    """Appends scalars to `metrics.jsonl` and, when TensorBoard is installed, to `tb/`.

    On resume, lines past the checkpoint's step are dropped first: they describe steps that will be
    trained again, and keeping them would leave two histories in one file. So is a last line torn
    by a crash in the middle of writing it.
    """

    def __init__(self, run_dir: Path, resume_step: int | None = None):
        self.path = run_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines(keepends=True)
                    if line.strip() and line_step(line) <= resume_step]
            atomic_write(self.path, lambda f: f.write("".join(kept).encode()))
        self.file = self.path.open("a")
        try:
            from torch.utils.tensorboard import SummaryWriter
            self.tensorboard = SummaryWriter(str(run_dir / "tb"), purge_step=resume_step)
        except ImportError:  # TensorBoard is optional; metrics.jsonl holds everything anyway
            self.tensorboard = None

    def log(self, step: int, **scalars: float) -> None:
        self.file.write(json.dumps({"step": step, **scalars}) + "\n")
        self.file.flush()
        if self.tensorboard:
            for name, value in scalars.items():
                if name != "epoch":
                    self.tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        self.file.close()
        if self.tensorboard:
            self.tensorboard.close()
