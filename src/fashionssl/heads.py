"""Heads that sit on top of a backbone during pretraining and are thrown away afterwards."""

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
