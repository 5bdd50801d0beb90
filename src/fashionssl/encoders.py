"""Backbones by name. Each maps (B, 1, 28, 28) images to (B, feature_dim) features.

`cnn` is the reference blog's encoder (three 3x3 conv + max-pool stages and a 256-d linear layer),
kept as the architecture every speed comparison is made with. `cnn-bn` is the same convolutional
trunk with BatchNorm after each convolution (which contrastive training on this data needs to learn
fast) and without the linear layer: its representation is the 128x3x3 = 1152-d conv feature map, as
SimCLR takes the representation before any fully connected layer (a linear layer there is just the
first layer of the projection head, which the loss makes invariant to what augmentation changed).
Measured once on an earlier SimCLR checkpoint that still had the linear layer (docs/benchmarks.md): the linear probe scores 90.6% on the conv features and 89.1%
on the 256-d linear layer's output. `resnet18` is the usual ResNet-18 with the CIFAR-style stem
(3x3 conv, stride 1, no max-pool) that small images need.
"""

from collections.abc import Callable

import torch
from torch import nn

from .errors import UserError


class ConvNet(nn.Module):
    """Three conv stages (32, 64, 128 channels, each halving the size: 28 -> 14 -> 7 -> 3), flattened,
    then a linear layer to `fc_dim` features (None: no linear layer, 1152 features)."""

    def __init__(self, batch_norm: bool = False, fc_dim: int | None = 256, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        channels = [1, width, 2 * width, 4 * width]
        for c_in, c_out in zip(channels, channels[1:]):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*layers)
        flat_dim = channels[-1] * 3 * 3
        self.fc = nn.Linear(flat_dim, fc_dim) if fc_dim else nn.Identity()
        self.feature_dim = fc_dim or flat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))  # (B, C, 3, 3) -> (B, feature_dim)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 28x28 inputs: 3x3 stem without max-pool, stages at 28, 14, 7 and 4 pixels."""

    def __init__(self, width: int = 64):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, c_in = [], width
        for i, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))  # global average pool -> (B, 512)


ENCODERS: dict[str, Callable[[], nn.Module]] = {
    "cnn": lambda: ConvNet(batch_norm=False),
    "cnn-bn": lambda: ConvNet(batch_norm=True, fc_dim=None),
    "resnet18": ResNet18,
}


def build_encoder(name: str) -> nn.Module:
    """A fresh encoder; it has a `feature_dim` attribute."""
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")
    return ENCODERS[name]()
