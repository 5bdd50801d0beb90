"""Rotation prediction, RotNet (Gidaris et al., 2018): classify which of four rotations was applied.

"we propose to learn image features by training ConvNets to recognize the 2d rotation that is
applied to the image that it gets as input [...] the ConvNet model must learn to localize salient
objects in the image, recognize their orientation and object type". Every image is shown in all
four rotations in the same batch, as the paper found best.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..augment import ViewSpec
from ..device import at_least_float32
from ..heads import mlp_head
from .base import Method, check_option, encode_views

NUM_ROTATIONS = 4


def rotate_all(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) square images -> (4N, C, H, W) rotated copies and their (4N,) labels.

    Block k (rows kN .. kN + N - 1) is every image rotated by k * 90 degrees counter-clockwise
    (torch.rot90 from the H axis towards the W axis) and has label k.
    """
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in range(NUM_ROTATIONS)])  # (4N, C, H, W)
    labels = torch.arange(NUM_ROTATIONS, device=images.device).repeat_interleave(len(images))  # (4N,)
    return rotated, labels


def rotate_each(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C, H, W) square images -> N rotated images and their (N,) labels: image i turned by
    (i mod 4) * 90 degrees, as rotate_all turns them. One rotation per image, a quarter of
    rotate_all's images: for an auxiliary rotation task, where the batch is shuffled anyway."""
    labels = torch.arange(len(images), device=images.device) % NUM_ROTATIONS  # (N,)
    rotated = torch.empty_like(images)  # every row written below: no copy of the input first
    for k in range(NUM_ROTATIONS):
        rotated[k::NUM_ROTATIONS] = torch.rot90(images[k::NUM_ROTATIONS], k, dims=(2, 3))
    return rotated, labels


def rotation_term(method: str, weight: float, feature_dim: int, hidden_dim: int) -> tuple[float, nn.Module | None]:
    """`method`'s checked rotation_weight and the head of its E-SSL term (`encode_with_rotation`): an
    MLP as wide as the method's projector's hidden layer, None at weight 0 (the method alone)."""
    weight = check_option(method, "rotation_weight", weight, "a number >= 0 (0: no rotation prediction)",
                          lambda v: v >= 0)
    return weight, mlp_head(feature_dim, hidden_dim, NUM_ROTATIONS) if weight else None


def encode_with_rotation(backbone: nn.Module, views: list[torch.Tensor], global_views: int,
                         head: nn.Module) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """E-SSL's rotation term (Dangovski et al., 2022, "Equivariant Contrastive Learning") beside a
    method's own loss: `head` predicts which of four rotations turned a copy of each image's first
    view (`rotate_each`: one rotation per image, so a step encodes 3N global images instead of 2N).
    The copies go right after the `global_views`, so they share their forward pass. Returns the
    views' backbone features, (V N, feature_dim) in view order as `encode_views` gives them, the
    rotation cross-entropy, and its logs."""
    rotated, rotation = rotate_each(views[0])  # (N, C, H, W), (N,)
    g, n = global_views, len(rotated)
    features = encode_views(backbone, [*views[:g], rotated, *views[g:]])  # ((V + 1) N, feature_dim)
    logits = head(features[g * n:(g + 1) * n])  # (N, 4)
    loss = F.cross_entropy(at_least_float32(logits), rotation)
    view_features = torch.cat([features[:g * n], features[(g + 1) * n:]])  # (V N, feature_dim)
    return view_features, loss, {"rotation_loss": loss.detach(),
                                 "rotation_acc": (logits.detach().argmax(1) == rotation).float().mean()}


class Rotation(Method):
    """Options: hidden_dim of the rotation classifier, an MLP on the backbone's features (0 makes it
    linear). RotNet's best features lie below its last layers, which specialise in rotation; an MLP
    head takes that specialisation off the backbone's output, as a projection head does for SimCLR."""

    view_spec = ViewSpec(global_views=1)
    needs_sync_batchnorm = False  # a per-sample loss: per-rank BatchNorm statistics do

    def __init__(self, backbone, hidden_dim: int = 512):
        super().__init__(backbone)
        check_option("rotation", "hidden_dim", hidden_dim, "an integer >= 0 (0: linear classifier)",
                     lambda v: v >= 0, integer=True)
        dim = backbone.feature_dim
        self.classifier = mlp_head(dim, hidden_dim, NUM_ROTATIONS) if hidden_dim else nn.Linear(dim, NUM_ROTATIONS)

    def forward(self, views, labels):
        x, rotation = rotate_all(views[0])  # (4N, C, H, W), (4N,): labels of the task, not the data
        logits = self.classifier(self.backbone(x))  # (4N, 4)
        loss = F.cross_entropy(at_least_float32(logits), rotation)
        return loss, {"rotation_acc": (logits.detach().argmax(1) == rotation).float().mean()}
