"""VICReg (Bardes, Ponce & LeCun, 2022, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning"): two views' embeddings are pulled together while each view's embeddings
are kept spread out and decorrelated over the batch.

VICReg "explicitly avoids the collapse problem with a simple regularization term on the variance
of the embeddings along each dimension individually", combined with a covariance term that
decorrelates the dimensions and the mean squared distance between the views. Like Barlow
Twins it needs no negatives, predictor, stop-gradient or momentum encoder, and the two branches need
not even share weights; the variance and covariance are those of the global batch under torchrun.
Loss in the official code's form: `losses.vicreg_loss`.

Collapse monitor: `embedding_std`, the std over the batch of each embedding dimension, averaged over
dimensions and both views. The variance hinge holds it at 1 or more once trained (at initialisation
it is about 0.3); 0 is total collapse. A warning is printed when an epoch's mean is below 0.1.
"""

import torch

from ..heads import mlp_head
from ..losses import vicreg_loss
from .base import Method, check_option, check_size

COLLAPSE_STD = 0.1  # warn below this epoch mean of embedding_std (a tenth of the hinge's target 1)


class VICReg(Method):
    """Options: sim_coeff, std_coeff, cov_coeff, the weights of the invariance, variance and
    covariance terms (the paper's 25, 25, 1); hidden_dim/out_dim of the 3-layer expander
    (Linear-BN-ReLU twice, then Linear).

    Sizes: the paper's expander is 8192-8192-8192 on a 2048-d ResNet-50 and its ablation finds
    wider better; here 1024-1024 on the 1152-d `cnn-bn` features, as for Barlow Twins (see there for
    the cost). The weights stay at the paper's: each term is already normalised by the width (the
    mean over dimensions, the covariance sum divided by D), so they do not depend on it the way
    Barlow Twins' lambda does. The validation split agrees (benchmarks/sweeps/redundancy.toml, 5 epochs):
    the paper's weights 90.64% linear probe, sim_coeff = std_coeff = 10 90.40%, lr 1e-3 90.12%.
    """

    def __init__(self, backbone, sim_coeff: float = 25.0, std_coeff: float = 25.0, cov_coeff: float = 1.0,
                 hidden_dim: int = 1024, out_dim: int = 1024):
        super().__init__(backbone)
        weight = ("a number >= 0", lambda v: v >= 0)
        self.sim_coeff = check_option("vicreg", "sim_coeff", sim_coeff, *weight)
        self.std_coeff = check_option("vicreg", "std_coeff", std_coeff, *weight)
        self.cov_coeff = check_option("vicreg", "cov_coeff", cov_coeff, *weight)
        check_size("vicreg", "hidden_dim", hidden_dim)
        self.out_dim = check_size("vicreg", "out_dim", out_dim)
        self.expander = mlp_head(backbone.feature_dim, hidden_dim, out_dim, num_layers=3)

    def forward(self, views, labels):
        n = views[0].shape[0]
        z = self.expander(self.backbone(torch.cat(views)))  # (2N, out_dim), both views in one BatchNorm batch
        loss = vicreg_loss(z[:n], z[n:], self.sim_coeff, self.std_coeff, self.cov_coeff)
        with torch.no_grad():  # this rank's images; the logged value is the mean over ranks
            embedding_std = z.float().view(2, n, -1).std(dim=1).mean()
        return loss, {"embedding_std": embedding_std}

    def epoch_warnings(self, summary):
        value = summary.get("epoch_embedding_std")
        if value is None or value >= COLLAPSE_STD:
            return []
        return [f"vicreg is collapsing: embedding_std {value:.4f} is below {COLLAPSE_STD:g} (the variance term "
                f"holds each dimension's std at 1 or more; 0 is total collapse: every image gets nearly the same "
                f"embedding and the backbone stops learning anything useful). Try a larger std_coeff, a lower --lr "
                f"or more --warmup-epochs."]
