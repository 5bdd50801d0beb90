"""SimCLR (Chen et al., 2020): pull two views of an image together, push all other views apart.

With `local_crops` > 0, multi-crop (Caron et al., 2020): small crops join the two views, every view
of an image a positive of every other (losses.multi_view_nt_xent).

`loss` picks the contrastive loss: "nt-xent" (SimCLR's), "decoupled" (Yeh et al., 2022: the positive
left out of its own denominator) or "debiased" (Chuang et al., 2020: the negatives corrected for the
fraction `class_prior` of them expected to share the anchor's class, 1 / classes for balanced data;
0.1 unless given).

`rotation_weight` (0.4, the paper's for SimCLR; 0 is SimCLR alone): E-SSL (Dangovski et al., 2022,
"Equivariant Contrastive Learning"): a head also predicts which of four rotations turned a copy of
the first view, its cross-entropy added at that weight. The contrastive loss asks for features blind
to the augmentations; rotation is one they should see, and RotNet's task teaches it beside them. On
by default since it won on the validation split at every seed (docs/benchmarks.md, "SimCLR with
rotation prediction"); runs recorded before keep 0 (config.OPTIONS_OF_OLDER_RUNS)."""

from ..errors import UserError
from ..heads import mlp_head
from ..losses import debiased_nt_xent, decoupled_nt_xent, multi_view_nt_xent
from .base import Method, check_option, check_size, encode_views, multi_crop_spec
from .rotation import encode_with_rotation, rotation_term

LOSSES = ("nt-xent", "decoupled", "debiased")


class SimCLR(Method):
    def __init__(self, backbone, temperature: float = 0.2, hidden_dim: int = 512, out_dim: int = 128,
                 local_crops: int = 0, local_size: int = 16, local_scale: tuple[float, float] = (0.05, 0.4),
                 loss: str = "nt-xent", class_prior: float | None = None, rotation_weight: float = 0.4):
        super().__init__(backbone)
        self.temperature = check_option("simclr", "temperature", temperature, "a number > 0", lambda v: v > 0)
        check_size("simclr", "hidden_dim", hidden_dim)
        check_size("simclr", "out_dim", out_dim)
        if loss not in LOSSES:
            raise UserError(f"simclr option loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if class_prior is not None and loss != "debiased":
            raise UserError(f"simclr option class_prior applies to loss debiased only (the loss is {loss}): "
                            "add --opt loss=debiased, or leave class_prior out")
        self.loss = loss
        self.class_prior = check_option("simclr", "class_prior", 0.1 if class_prior is None else class_prior,
                                        "a number in [0, 1)", lambda v: 0 <= v < 1)
        self.view_spec = multi_crop_spec("simclr", local_crops, local_size, local_scale)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)
        self.rotation_weight, self.rotation_head = rotation_term("simclr", rotation_weight, backbone.feature_dim,
                                                                 hidden_dim)

    def forward(self, views, labels):
        if not self.rotation_weight:
            # One forward pass over the views of each size, so BatchNorm statistics mix them and
            # cannot leak which view an embedding came from.
            return self.contrastive_loss(encode_views(self.backbone, views)), {}
        features, rotation_loss, logs = encode_with_rotation(self.backbone, views, self.view_spec.global_views,
                                                             self.rotation_head)
        return self.contrastive_loss(features) + self.rotation_weight * rotation_loss, logs

    def contrastive_loss(self, features):
        """The contrastive loss of the views' backbone features, (V N, feature_dim) in view order."""
        z = list(self.projector(features).chunk(self.view_spec.global_views + self.view_spec.local_views))
        if self.loss == "debiased":
            return debiased_nt_xent(z, self.temperature, self.class_prior)
        if self.loss == "decoupled":
            return decoupled_nt_xent(z, self.temperature)
        return multi_view_nt_xent(z, self.temperature)
