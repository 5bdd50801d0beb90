"""Barlow Twins (Zbontar et al., 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction"): the cross-correlation matrix of two views' embeddings is pushed towards the identity.

"the invariance term of the objective, by trying to equate the diagonal elements of the
cross-correlation matrix to 1, makes the embedding invariant to the distortions applied. The
redundancy reduction term, by trying to equate the off-diagonal elements of the cross-correlation
matrix to 0, decorrelates the different vector components of the embedding." There are no
negatives, no predictor, no stop-gradient and no momentum encoder: the statistics over the batch
(each dimension standardised, C computed over the global batch under torchrun) are what keep it
from collapsing. Loss and its normalisation convention (the official
code's biased std; the paper's pseudo-code uses torch's unbiased one): `losses.barlow_twins_loss`,
divided here by the embedding width (see `BarlowTwins`). The std of the L2-normalised embeddings is
logged as `collapse_std`, as for SimSiam.
"""

import torch

from ..heads import mlp_head
from ..losses import barlow_twins_loss
from .base import Method, check_option, check_size, collapse_warnings, normalized_std


class BarlowTwins(Method):
    """Options: lambda_offdiag, the weight of the redundancy-reduction term (0.04: the paper's 5e-3
    scaled to this projector's width, chosen on the validation split);
    hidden_dim/out_dim of the 3-layer projector (Linear-BN-ReLU twice, then Linear).

    Sizes: the paper's projector is 8192-8192-8192 on a 2048-d ResNet-50, and its ablation finds
    accuracy still rising with the embedding's width. Here 1024-1024 on the 1152-d `cnn-bn` features:
    as wide as the representation, about 3M multiply-adds per image for the projector and 1M for
    C against the convolutions' 7.4M (a forward and backward of 256 images measured 1.2x SimCLR's
    time on one CPU thread); 512-512 would cost a third as much, at a width where the paper's curve
    has fallen furthest below its best.

    lambda_offdiag is 0.04, not the paper's 5e-3: with D 8x smaller, the off-diagonal term (D(D-1)
    entries) weighs about 8x less against the diagonal one (D entries) at the same lambda, and 5e-3 x
    8192 / 1024 = 0.04 restores the paper's balance. The official code does not scale lambda with D
    (0.0051 for 8192), and its authors "don't have a lot of data points for setting lambda with
    smaller projector dimensions" (facebookresearch/barlowtwins#9), so the value was chosen on the
    validation split (benchmarks/sweeps/redundancy.toml, 5 epochs): 5e-3 90.10%, 0.02 90.36%, 0.04
    90.84%, 0.08 89.96% linear probe.

    Scale: the loss is the paper's divided by out_dim (the diagonal term becomes the mean over
    dimensions of (1 - C_ii)^2, as VICReg divides its covariance term by D), so it starts near 1
    rather than near D. A constant factor changes nothing for AdamW (the default), but the paper's sum
    gives gradients about 400 times SimCLR's at D = 1024 (measured at initialisation): plain SGD at
    the other methods' learning rates then moves conv weights many times their size in one step, and
    LARS, which adapts only weight matrices, passes biases and BatchNorm parameters the raw gradient.
    The authors' research code scaled the loss the same way, by 196 / D, and found the unscaled
    open-source loss "didn't work quite as well" (same issue; the first release's --scale-loss 0.024
    is 196 / 8192).
    """

    def __init__(self, backbone, lambda_offdiag: float = 0.04, hidden_dim: int = 1024, out_dim: int = 1024):
        super().__init__(backbone)
        self.lambda_offdiag = check_option("barlow", "lambda_offdiag", lambda_offdiag, "a number >= 0",
                                           lambda v: v >= 0)
        check_size("barlow", "hidden_dim", hidden_dim)
        self.out_dim = check_size("barlow", "out_dim", out_dim)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim, num_layers=3)

    def forward(self, views, labels):
        n = views[0].shape[0]
        z = self.projector(self.backbone(torch.cat(views)))  # (2N, out_dim), both views in one BatchNorm batch
        loss = barlow_twins_loss(z[:n], z[n:], self.lambda_offdiag) / self.out_dim  # per dimension (docstring)
        return loss, {"collapse_std": normalized_std(z)}

    def epoch_warnings(self, summary):
        return collapse_warnings("barlow", summary, self.out_dim,
                                 "Try a lower --lr or more --warmup-epochs, or a larger lambda_offdiag.")
