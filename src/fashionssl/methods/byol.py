"""BYOL (Grill et al., 2020): an online network predicts a slowly moving target network's projection
of another view of the same image; there are no negatives.

"From an augmented view of an image, we train the online network to predict the target network
representation of the same image under a different augmented view. At the same time, we update the
target network with a slow-moving average of the online network." The predictor and the
stop-gradient into the target are what keep this from collapsing to a constant.
"""

import torch

from ..heads import mlp_head
from ..losses import normalized_mse
from .base import Method, check_option, check_size, collapse_warnings, ema_update, frozen_copy, normalized_std, target_momentum


class BYOL(Method):
    """Options: tau_base, the target's EMA momentum at step 0, raised to 1 by the paper's cosine
    schedule (0.99: the paper's 0.996 is for hundreds of ImageNet epochs; in ~30 short epochs it
    would leave the target too far behind, and the paper's ablation finds 0.99 about as good);
    hidden_dim/out_dim of projector and predictor (the paper's 4096/256 scaled down to a 256-d
    backbone)."""

    def __init__(self, backbone, tau_base: float = 0.99, hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(backbone)
        self.tau_base = check_option("byol", "tau_base", tau_base, "a number in [0, 1)", lambda v: 0 <= v < 1)
        check_size("byol", "hidden_dim", hidden_dim)
        self.out_dim = check_size("byol", "out_dim", out_dim)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)
        self.predictor = mlp_head(out_dim, hidden_dim, out_dim)
        # Target network: backbone + projector, a copy that only EMA updates move.
        self.target_backbone = frozen_copy(self.backbone)
        self.target_projector = frozen_copy(self.projector)

    def forward(self, views, labels):
        n = views[0].shape[0]
        x = torch.cat(views)  # (2N, C, H, W): one pass, so BatchNorm sees both views together
        z = self.projector(self.backbone(x))  # (2N, out_dim) online projections
        p = self.predictor(z)  # (2N, out_dim) online predictions
        with torch.no_grad():
            t = self.target_projector(self.target_backbone(x))  # (2N, out_dim) targets, no gradient
        # Symmetric: view 1 predicts view 2's target and the other way round (the paper sums both).
        loss = normalized_mse(p[:n], t[n:]) + normalized_mse(p[n:], t[:n])
        return loss, {"collapse_std": normalized_std(z)}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        tau = target_momentum(self.tau_base, step, total_steps)
        ema_update(self.target_backbone, self.backbone, tau)
        ema_update(self.target_projector, self.projector, tau)

    def epoch_warnings(self, summary):
        return collapse_warnings("byol", summary, self.out_dim,
                                 "Try a lower --lr or more --warmup-epochs, or a higher tau_base.")
