"""The one seam between methods and the training loop.

A method owns its heads and its loss and says how many augmented views it needs; the loop owns
data, augmentation, optimisation, precision, checkpoints and logging, and never asks which method
it runs. Adding a method is one file and one line in `methods/__init__.py`.
"""

import torch
from torch import nn


class Method(nn.Module):
    """Base class: subclasses set `backbone` (what evaluation keeps) and implement `forward`."""

    num_views: int = 2       # augmented views of each image the loop passes to forward
    uses_labels: bool = False  # True only for the supervised reference; tables mark it

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, views: list[torch.Tensor], labels: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Views (each (B, 1, H, W)) and the batch's labels (ignored by self-supervised methods) ->
        (scalar loss, extra detached scalars to log)."""
        raise NotImplementedError

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int) -> None:
        """Called after each optimizer step: EMA updates, queues, centres. Default: nothing."""
