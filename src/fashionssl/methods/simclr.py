"""SimCLR (Chen et al., 2020): pull two views of an image together, push all other views apart."""

import torch

from ..heads import mlp_head
from ..losses import nt_xent
from .base import Method, check_option, check_size


class SimCLR(Method):
    def __init__(self, backbone, temperature: float = 0.2, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(backbone)
        self.temperature = check_option("simclr", "temperature", temperature, "a number > 0", lambda v: v > 0)
        check_size("simclr", "hidden_dim", hidden_dim)
        check_size("simclr", "out_dim", out_dim)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)

    def forward(self, views, labels):
        n = views[0].shape[0]
        # One forward pass over both views, so BatchNorm statistics mix them and cannot leak
        # which view an embedding came from.
        z = self.projector(self.backbone(torch.cat(views)))  # (2N, out_dim)
        return nt_xent(z[:n], z[n:], self.temperature), {}
