"""SimCLR (Chen et al., 2020): pull two views of an image together, push all other views apart.

With `local_crops` > 0, multi-crop (Caron et al., 2020): small crops join the two views, every view
of an image a positive of every other (losses.multi_view_nt_xent).

With `class_prior` > 0, the debiased contrastive loss (Chuang et al., 2020; losses.debiased_nt_xent):
negatives corrected for the fraction of them expected to share the anchor's class (1 / classes for
balanced data: 0.1 on Fashion-MNIST)."""

from ..heads import mlp_head
from ..losses import debiased_nt_xent, multi_view_nt_xent
from .base import Method, check_option, check_size, encode_views, multi_crop_spec


class SimCLR(Method):
    def __init__(self, backbone, temperature: float = 0.2, hidden_dim: int = 512, out_dim: int = 128,
                 local_crops: int = 0, local_size: int = 16, local_scale: tuple[float, float] = (0.05, 0.4),
                 class_prior: float = 0.0):
        super().__init__(backbone)
        self.temperature = check_option("simclr", "temperature", temperature, "a number > 0", lambda v: v > 0)
        check_size("simclr", "hidden_dim", hidden_dim)
        check_size("simclr", "out_dim", out_dim)
        self.class_prior = check_option("simclr", "class_prior", class_prior, "a number in [0, 1)",
                                        lambda v: 0 <= v < 1)
        self.view_spec = multi_crop_spec("simclr", local_crops, local_size, local_scale)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)

    def forward(self, views, labels):
        # One forward pass over the views of each size, so BatchNorm statistics mix them and cannot
        # leak which view an embedding came from.
        z = self.projector(encode_views(self.backbone, views))  # (V*N, out_dim)
        z = list(z.chunk(len(views)))
        if self.class_prior:
            return debiased_nt_xent(z, self.temperature, self.class_prior), {}
        return multi_view_nt_xent(z, self.temperature), {}
