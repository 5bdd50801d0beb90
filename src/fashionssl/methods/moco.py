"""MoCo v2 (He et al., 2020; Chen et al., 2020): contrast each query against a momentum-encoded
positive key and a queue of keys from earlier batches.

"we maintain the dictionary as a queue of data samples: the encoded representations of the current
mini-batch are enqueued, and the oldest are dequeued [...] the key encoder is a momentum-based
moving average of the query encoder." MoCo v2 adds the MLP projection head and stronger
augmentation; here the loss is also symmetrised over the two views and both views' keys are
enqueued, as in the official CIFAR demo.

BatchNorm: the official code shuffles the key batch across GPUs ("shuffling BN") so the key
encoder's batch statistics cannot leak which query belongs to which key. Here the key encoder
sees both views in one batch, like the query encoder, and with several processes its BatchNorm is
SyncBatchNorm (the default for MoCo, see distributed.py): statistics of the whole global batch, as
in one process, so there is no per-GPU batch to leak through. The keys of every rank are gathered
into the queue, so all ranks hold the same queue.
"""

import torch

from ..device import at_least_float32
from ..distributed import gather
from ..heads import mlp_head
from ..losses import info_nce
from .base import Method, check_option, check_size, ema_update, frozen_copy, target_momentum


class MoCo(Method):
    """Options: temperature of the InfoNCE softmax; queue_size negatives; momentum, the key
    encoder's EMA momentum at step 0, raised to 1 by BYOL's cosine schedule over the run (0.99 rather
    than MoCo's 0.999, which suits 200 epochs of ImageNet, not ~30 short epochs: the key encoder
    must keep up with a query encoder that changes fast); hidden_dim/out_dim of the projector."""

    def __init__(self, backbone, temperature: float = 0.2, queue_size: int = 4096, momentum: float = 0.99,
                 hidden_dim: int = 512, out_dim: int = 128):
        super().__init__(backbone)
        self.temperature = check_option("moco", "temperature", temperature, "a number > 0", lambda v: v > 0)
        check_size("moco", "queue_size", queue_size)
        self.momentum = check_option("moco", "momentum", momentum, "a number in [0, 1)", lambda v: 0 <= v < 1)
        check_size("moco", "hidden_dim", hidden_dim)
        check_size("moco", "out_dim", out_dim)
        self.projector = mlp_head(backbone.feature_dim, hidden_dim, out_dim)
        # Key encoder: starts as a copy of backbone + projector, then moves only by EMA.
        self.key_backbone = frozen_copy(self.backbone)
        self.key_projector = frozen_copy(self.projector)
        # Random unit vectors until real keys replace them (as the official code starts).
        self.register_buffer("queue", torch.nn.functional.normalize(torch.randn(queue_size, out_dim), dim=1))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self._new_keys = None  # this step's keys until after_step enqueues them: never outlives a step, so no state

    def forward(self, views, labels):
        n = views[0].shape[0]
        x = torch.cat(views)  # (2N, C, H, W): one pass, so BatchNorm sees both views together
        q = self.projector(self.backbone(x))  # (2N, out_dim) queries
        with torch.no_grad():
            k = at_least_float32(self.key_projector(self.key_backbone(x)))  # (2N, out_dim) keys, no gradient
        queue = self.queue  # (K, out_dim) negatives: keys of earlier steps
        # Symmetric: view 1's query against view 2's key, and the other way round.
        loss = info_nce(q[:n], k[n:], queue, self.temperature) + info_nce(q[n:], k[:n], queue, self.temperature)
        if self.training:  # every rank's keys, view by view: the global batch's order, whatever the world size
            self._new_keys = torch.cat([gather(keys) for keys in torch.nn.functional.normalize(k, dim=1).split(n)])
        return loss, {}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = target_momentum(self.momentum, step, total_steps)
        ema_update(self.key_backbone, self.backbone, m)
        ema_update(self.key_projector, self.projector, m)
        if self._new_keys is not None:
            self._dequeue_and_enqueue(self._new_keys)
            self._new_keys = None

    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest len(keys) entries with `keys` (L2-normalised, (n, out_dim)).

        Slots are ptr, ptr+1, ... modulo the queue size: when the batch does not divide the queue,
        the first keys fill the end of the queue and the rest wrap around to its start. With more
        keys than slots, only the newest queue_size are kept.
        """
        size, n = len(self.queue), len(keys)
        if n > size:  # keep the newest, in the slots they would have reached after writing all n
            self.queue_ptr.add_(n - size)
            keys = keys[n - size:]
        slots = (self.queue_ptr + torch.arange(len(keys), device=keys.device)) % size  # (n,)
        self.queue[slots] = keys.to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + len(keys)) % size)
