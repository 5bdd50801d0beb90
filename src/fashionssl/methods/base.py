"""The one seam between methods and the training loop.

A method owns its heads and its loss and says how many augmented views it needs; the loop owns
data, augmentation, optimisation, precision, checkpoints and logging, and never asks which method
it runs. Adding a method is one file and one line in `methods/__init__.py`.
"""

import copy
import functools
import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import ViewSpec
from ..errors import UserError
from ..schedules import cosine_momentum


class Method(nn.Module):
    """Base class: subclasses set `backbone` (what evaluation keeps) and implement `forward`."""

    view_spec: ViewSpec = ViewSpec()  # the augmented views of each image the loop passes to forward
    uses_labels: bool = False  # True when training sees the labels (supervised, clip); tables mark it
    label_use: str = "uses labels"  # how, in the words a table title shows
    # Whether multi-process runs use SyncBatchNorm by default: True where the loss compares the
    # samples of a batch (per-rank statistics would then change the loss and can leak which views
    # belong together); False where per-sample losses do as well with per-rank statistics.
    needs_sync_batchnorm: bool = True
    # True if some trainable parameters can be left out of a step's loss (e.g. frozen by detaching
    # them for the first steps): multi-process training must then look for them at every step.
    skips_parameters: bool = False

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Views (each (B, C, H, W), in view_spec's order: global views, then local ones) and the
        batch's labels (None for unlabelled data; ignored by self-supervised methods) -> (scalar loss,
        extra detached scalars to log)."""
        raise NotImplementedError

    def epoch_warnings(self, summary: dict[str, float]) -> list[str]:
        """Warnings to print after an epoch, given its summary (the epoch means of forward's extra
        logs appear as `epoch_<name>`), e.g. a collapse monitor. Default: none."""
        return []

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimizer step: EMA updates, queues, centres. Default: nothing."""

    @torch.no_grad()
    def extra_evaluation(self, features: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> dict:
        """Results beyond the probe and kNN that only this method can produce (e.g. CLIP's zero-shot
        accuracy), given the frozen backbone's features and labels of each split ("train", "val",
        "test"; features as evaluation extracted them, on the model's device). Default: none."""
        return {}


# Helpers that several methods share.

def check_option(method: str, name: str, value: object, rule: str, valid, integer: bool = False):
    """Return `value` if it is a finite number (an int when `integer`) for which `valid(value)` holds;
    else raise a UserError naming the method and option. `--opt` values arrive as TOML values or
    plain strings, so the type is checked too (and a bool is not a number)."""
    is_number = isinstance(value, int if integer else (int, float)) and not isinstance(value, bool)
    if not (is_number and math.isfinite(value) and valid(value)):
        raise UserError(f"{method} option {name} must be {rule}, got {value!r}")
    return value


def check_size(method: str, name: str, value: object) -> int:
    """check_option for a layer width or queue length: an integer >= 1."""
    return check_option(method, name, value, "an integer >= 1", lambda v: v >= 1, integer=True)


def multi_crop_spec(method: str, local_crops: object, local_size: object, local_scale: object) -> ViewSpec:
    """The ViewSpec of a multi-crop method (2 global views + local_crops small ones) from its
    options, each checked with a UserError naming the method and option."""
    check_option(method, "local_crops", local_crops, "an integer >= 0 (0: no local crops)", lambda v: v >= 0, integer=True)
    check_option(method, "local_size", local_size, "an integer >= 2 (pixels)", lambda v: v >= 2, integer=True)
    numbers = isinstance(local_scale, (list, tuple)) and len(local_scale) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in local_scale)
    if not (numbers and 0 < local_scale[0] <= local_scale[1] <= 1):
        raise UserError(f"{method} option local_scale must be [lo, hi] with 0 < lo <= hi <= 1 (area fractions), "
                        f"got {local_scale!r}")
    return ViewSpec(2, local_crops, local_size, (float(local_scale[0]), float(local_scale[1])))


def encode_views(backbone: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """Backbone features of every view, (V * B, feature_dim) in view order.

    Consecutive views of one size share a forward pass, so BatchNorm statistics mix them (as for
    two-view methods); global and local crops differ in size, so each size gets its own pass, as
    in the official multi-crop code.
    """
    groups = itertools.groupby(views, key=lambda v: v.shape[-2:])
    return torch.cat([backbone(torch.cat(list(group))) for _, group in groups])


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with requires_grad off: a target/key network that the optimizer never sees (it
    is built from the parameters that require grad) and that only EMA updates move."""
    return copy.deepcopy(module).requires_grad_(False)


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """target <- momentum * target + (1 - momentum) * online, parameter by parameter.

    Buffers (BatchNorm running statistics) are not averaged: the target network runs in train
    mode and keeps its own, as in the official MoCo and BYOL code.
    """
    for t, o in zip(target.parameters(), online.parameters(), strict=True):
        t.copy_(momentum * t + (1 - momentum) * o)


@functools.lru_cache(maxsize=8)
def _momentum_schedule(base: float, total_steps: int) -> list[float]:
    return cosine_momentum(base, total_steps).tolist()


def target_momentum(base: float, step: int, total_steps: int) -> float:
    """The EMA momentum for the update after `step` under BYOL's cosine schedule from `base` to 1."""
    return _momentum_schedule(base, total_steps)[min(step, total_steps - 1)]


def normalized_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse monitor (SimSiam section 4.1): the std over the batch of the L2-normalised outputs,
    averaged over dimensions. About 1/sqrt(d) for healthy, spread-out outputs; 0 when every image
    maps to the same vector. Detached: it is for logging only."""
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()


def collapse_warnings(method: str, summary: dict[str, float], dim: int, advice: str, fraction: float = 0.2) -> list[str]:
    """A warning when the epoch mean of `collapse_std` (see normalized_std) is below fraction/sqrt(dim)."""
    value = summary.get("epoch_collapse_std")
    healthy = 1 / math.sqrt(dim)
    if value is None or value >= fraction * healthy:
        return []
    return [f"{method} is collapsing: collapse_std {value:.4f} is below {fraction:g}/sqrt({dim}) = "
            f"{fraction * healthy:.4f} (healthy is about {healthy:.4f}, 0 is total collapse: every image gets "
            f"nearly the same embedding and the backbone stops learning anything useful). {advice}"]
