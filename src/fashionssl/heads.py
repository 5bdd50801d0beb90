"""Heads that sit on top of a backbone during pretraining and are thrown away afterwards."""

import torch
import torch.nn.functional as F
from torch import nn


def mlp_head(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, batch_norm: bool = True) -> nn.Sequential:
    """Linear-(BN)-ReLU blocks followed by a plain linear output layer (SimCLR's projection head g).

    SimCLR found a non-linear head essential: the loss discards information (e.g. the augmentation
    applied) in the head's output, so the representation before it keeps more.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        layers.append(nn.Linear(dim, hidden_dim, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(nn.ReLU(inplace=True))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al., 2021): a 3-layer GELU MLP to a `bottleneck_dim`
    embedding, L2-normalised, then a weight-normalised linear layer without bias to `out_dim` logits.

    The last layer's rows are normalised in every forward (weight norm with the gain fixed at 1,
    DINO's norm_last_layer), so each logit is a cosine similarity to one of out_dim learned
    directions: their scale cannot grow, which keeps the softmax temperatures meaningful.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int = 512, bottleneck_dim: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim), nn.GELU(),
                                 nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.last_layer.weight, dim=1))
