"""SimCLR (Chen et al., 2020): pull two views of an image together, push all other views apart.

With `rotation_weight` > 0 it is E-SimCLR (Dangovski et al., 2022, *Equivariant Contrastive
Learning*): a third, half-size view of each image is shown in all four rotations, and a separate
head predicts which; its cross-entropy, times the weight, joins the contrastive loss. The features
then stay sensitive to orientation, which the contrastive loss alone may discard, and the third
view costs about half a view's compute (four copies at a quarter of the pixels).
"""

import torch
import torch.nn.functional as F

from ..augment import ViewSpec
from ..device import at_least_float32
from ..heads import mlp_head
from ..losses import nt_xent
from .base import Method, check_option, check_size
from .rotation import NUM_ROTATIONS, rotate_all


class SimCLR(Method):
    def __init__(self, backbone, temperature: float = 0.2, hidden_dim: int = 512, out_dim: int = 128,
                 rotation_weight: float = 0.0, rotation_size: int = 14):
        super().__init__(backbone)
        self.temperature = check_option("simclr", "temperature", temperature, "a number > 0", lambda v: v > 0)
        check_size("simclr", "hidden_dim", hidden_dim)
        check_size("simclr", "out_dim", out_dim)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)
        self.rotation_weight = check_option("simclr", "rotation_weight", rotation_weight,
                                            "a number >= 0 (0: plain SimCLR)", lambda v: v >= 0)
        check_option("simclr", "rotation_size", rotation_size, "an integer >= 2 (pixels)", lambda v: v >= 2, integer=True)
        if rotation_weight:
            # E-SSL's CIFAR recipe: the rotated view is a crop of the usual scale at half the size.
            self.view_spec = ViewSpec(global_views=2, local_views=1, local_size=rotation_size, local_scale=(0.2, 1.0))
            self.rotation_head = mlp_head(backbone.feature_dim, hidden_dim, NUM_ROTATIONS)

    def forward(self, views, labels):
        n = views[0].shape[0]
        # One forward pass over both views, so BatchNorm statistics mix them and cannot leak
        # which view an embedding came from.
        z = self.projector(self.backbone(torch.cat(views[:2])))  # (2N, out_dim)
        loss = nt_xent(z[:n], z[n:], self.temperature)
        if not self.rotation_weight:
            return loss, {}
        rotated, rotation = rotate_all(views[2])  # (4N, C, s, s), (4N,)
        logits = self.rotation_head(self.backbone(rotated))  # (4N, 4)
        rotation_loss = F.cross_entropy(at_least_float32(logits), rotation)
        return loss + self.rotation_weight * rotation_loss, {
            "rotation_loss": rotation_loss.detach(), "rotation_acc": (logits.detach().argmax(1) == rotation).float().mean()}
