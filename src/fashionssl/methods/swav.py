"""SwAV (Caron et al., 2020): swap the cluster assignments of two views of an image.

"we compute a code from an augmented version of the image and predict this code from other
augmented versions of the same image." Codes are soft assignments to learned prototypes, computed
by Sinkhorn-Knopp so that the batch is spread equally over the prototypes (which is what prevents
collapse, instead of negatives); every crop, small local ones included, predicts the codes of the
two global views.
"""

import torch
import torch.nn.functional as F
from torch import nn

from ..device import at_least_float32
from ..heads import mlp_head
from ..losses import sinkhorn, swapped_prediction
from .base import Method, check_option, check_size, encode_views, multi_crop_spec
from .rotation import encode_with_rotation, rotation_term


class SwAV(Method):
    """Options: prototypes (K; 300 for ~55k images of 10 classes, as SwAV's CIFAR settings use a
    few thousand for 50k images at higher resolution, and Sinkhorn needs batches not much smaller
    than K); temperature of the prediction softmax; epsilon and sinkhorn_iterations of the codes;
    freeze_prototypes_steps, the first optimizer steps during which prototypes get no gradient (the
    paper freezes them for the first epoch: about 100 steps of batch 512 on the full data);
    queue_length embeddings per global view kept from earlier batches and used for the codes once
    full, filled from step queue_start_steps on (0 = no queue: the paper needs one only for batches
    far below K); hidden_dim/out_dim of the projector; local_crops, local_size and local_scale of
    multi-crop; rotation_weight, E-SSL's rotation term as SimCLR's (`rotation.encode_with_rotation`;
    0, the default: SwAV alone)."""

    skips_parameters = True  # the prototypes are left out of the loss while frozen

    def __init__(self, backbone, prototypes: int = 300, temperature: float = 0.1, epsilon: float = 0.05,
                 sinkhorn_iterations: int = 3, freeze_prototypes_steps: int = 100, queue_length: int = 0,
                 queue_start_steps: int = 0, hidden_dim: int = 512, out_dim: int = 128, local_crops: int = 4,
                 local_size: int = 16, local_scale: tuple[float, float] = (0.05, 0.4), rotation_weight: float = 0.0):
        super().__init__(backbone)
        self.view_spec = multi_crop_spec("swav", local_crops, local_size, local_scale)
        check_size("swav", "prototypes", prototypes)
        self.temperature = check_option("swav", "temperature", temperature, "a number > 0", lambda v: v > 0)
        self.epsilon = check_option("swav", "epsilon", epsilon, "a number > 0", lambda v: v > 0)
        self.sinkhorn_iterations = check_size("swav", "sinkhorn_iterations", sinkhorn_iterations)
        non_negative = lambda v: v >= 0  # noqa: E731
        self.freeze_prototypes_steps = check_option("swav", "freeze_prototypes_steps", freeze_prototypes_steps,
                                                    "an integer >= 0", non_negative, integer=True)
        self.queue_length = check_option("swav", "queue_length", queue_length, "an integer >= 0 (0: no queue)",
                                         non_negative, integer=True)
        self.queue_start_steps = check_option("swav", "queue_start_steps", queue_start_steps, "an integer >= 0",
                                              non_negative, integer=True)
        check_size("swav", "hidden_dim", hidden_dim)
        check_size("swav", "out_dim", out_dim)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)
        self.prototypes = nn.Linear(out_dim, prototypes, bias=False)
        self.rotation_weight, self.rotation_head = rotation_term("swav", rotation_weight, backbone.feature_dim,
                                                                 hidden_dim)
        self._normalize_prototypes()
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # optimizer steps so far
        globals_ = self.view_spec.global_views
        # Newest first; used once queue_filled reaches queue_length. Saved with the state, so resume is exact.
        self.register_buffer("queue", torch.zeros(globals_, queue_length, out_dim))
        self.register_buffer("queue_filled", torch.zeros((), dtype=torch.long))
        self._new_embeddings = None  # this step's global embeddings until after_step enqueues them

    @torch.no_grad()
    def _normalize_prototypes(self) -> None:
        """Unit-norm prototypes, so scores are cosine similarities (the paper normalises every step)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, views, labels):
        n, globals_ = views[0].shape[0], self.view_spec.global_views
        if self.rotation_weight:
            features, rotation_loss, logs = encode_with_rotation(self.backbone, views, globals_, self.rotation_head)
        else:
            features, rotation_loss, logs = encode_views(self.backbone, views), 0.0, {}
        z = F.normalize(at_least_float32(self.projector(features)), dim=1)  # (V*N, out_dim)
        weight = self.prototypes.weight
        if self.steps_done < self.freeze_prototypes_steps:
            weight = weight.detach()  # frozen: no gradient, so the optimizer skips them
        scores = (z @ at_least_float32(weight.T)).view(len(views), n, -1)  # (V, N, K) cosine similarities
        with torch.no_grad():
            codes = []
            for i in range(globals_):
                s = scores[i]
                if self.queue_length and self.queue_filled == self.queue_length:
                    s = torch.cat([self.queue[i] @ at_least_float32(weight.T), s])  # queued embeddings join the batch
                codes.append(sinkhorn(s, self.epsilon, self.sinkhorn_iterations)[-n:])
        loss = swapped_prediction(scores, torch.stack(codes), self.temperature)
        if self.training and self.queue_length and self.steps_done >= self.queue_start_steps:
            self._new_embeddings = z[:globals_ * n].detach().view(globals_, n, -1)
        return loss + self.rotation_weight * rotation_loss, logs

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self._normalize_prototypes()
        self.steps_done.fill_(step + 1)
        if self._new_embeddings is not None:
            self.queue.copy_(torch.cat([self._new_embeddings.to(self.queue.dtype), self.queue], dim=1)[:, :self.queue_length])
            self.queue_filled.copy_((self.queue_filled + self._new_embeddings.shape[1]).clamp(max=self.queue_length))
            self._new_embeddings = None
