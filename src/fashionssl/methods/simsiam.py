"""SimSiam (Chen & He, 2021): BYOL without the momentum encoder; a stop-gradient alone prevents collapse.

"Our hypothesis is that the stop-gradient operation is critical [...] L = 1/2 D(p1, stopgrad(z2))
+ 1/2 D(p2, stopgrad(z1))": one encoder (backbone + projector) sees both views, a predictor maps
one view's projection to the other's, and the target side gets no gradient. Collapse remains a
risk ("all outputs collapse to a constant"), so the std of the L2-normalised projections is logged
as `collapse_std` and a warning is printed when an epoch's mean falls far below 1/sqrt(out_dim).
"""

import torch

from ..heads import mlp_head
from ..losses import negative_cosine
from .base import Method, check_size, collapse_warnings, normalized_std


class SimSiam(Method):
    """Options: hidden_dim/out_dim of the projector and pred_dim, the predictor's bottleneck (the
    paper's 2048 -> 512 -> 2048 is a 4x bottleneck; here 256 -> 64 -> 256)."""

    def __init__(self, backbone, hidden_dim: int = 512, out_dim: int = 256, pred_dim: int = 64):
        super().__init__(backbone)
        check_size("simsiam", "hidden_dim", hidden_dim)
        self.out_dim = check_size("simsiam", "out_dim", out_dim)
        check_size("simsiam", "pred_dim", pred_dim)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)
        self.predictor = mlp_head(out_dim, pred_dim, out_dim)

    def forward(self, views, labels):
        n = views[0].shape[0]
        z = self.projector(self.backbone(torch.cat(views)))  # (2N, out_dim), both views in one BatchNorm batch
        p = self.predictor(z)  # (2N, out_dim)
        z = z.detach()  # stop-gradient: the targets are constants
        loss = 0.5 * (negative_cosine(p[:n], z[n:]) + negative_cosine(p[n:], z[:n]))
        return loss, {"collapse_std": normalized_std(z)}

    def epoch_warnings(self, summary):
        return collapse_warnings("simsiam", summary, self.out_dim,
                                 "Try a lower --lr or more --warmup-epochs, or a larger weight decay.")
