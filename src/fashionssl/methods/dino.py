"""DINO (Caron et al., 2021): self-distillation with no labels.

"we train a student network to match the output of a teacher network [...] the teacher is built
from past iterations of the student network" by an exponential moving average. The student sees
every crop (two global views and small local ones), the teacher only the global views, so the
student learns "local-to-global" correspondences. Collapse is avoided by centring the teacher's
outputs with a running mean (which stops one dimension from dominating) and sharpening them with a
low temperature (which stops the output from becoming uniform).
"""

import torch

from ..device import at_least_float32
from ..heads import DINOHead
from ..losses import dino_center, dino_loss
from .base import Method, check_option, check_size, ema_update, encode_views, frozen_copy, multi_crop_spec, target_momentum


def teacher_temperature(step: int, warmup_steps: int, start: float, end: float) -> float:
    """The teacher's softmax temperature at `step` (0-based): linear from `start` at step 0 to `end` at
    `warmup_steps`, then `end` ("a linear warm-up [...] during the first 30 epochs")."""
    if step >= warmup_steps:
        return end
    return start + (end - start) * step / warmup_steps


class DINO(Method):
    """Options: out_dim of the head (1024: the paper's 65536 is for the 1.28M images and 1000
    classes of ImageNet, where it found more dimensions better; Fashion-MNIST has 55k images and 10
    classes, and 1024 keeps the head and softmax cheap on a CPU), hidden_dim and bottleneck_dim of its
    MLP; student_temperature (0.1); the teacher temperature rising linearly from
    warmup_teacher_temperature to teacher_temperature over teacher_temperature_warmup_steps (the
    paper's 0.04 -> 0.07 over 30 of 100 epochs; 300 steps is about 3 of 10 epochs at batch 512 on
    the full data); center_momentum (0.9); momentum, the teacher's EMA momentum at step 0 raised to 1
    by a cosine schedule (0.99 rather than 0.996 for the same reason as BYOL here: short runs);
    local_crops, local_size and local_scale of multi-crop.

    The step inside forward (for the temperature) comes from a `steps_done` buffer that after_step
    sets: a buffer is saved in the checkpoint, so a resumed run continues the schedule exactly, and
    the loop's interface stays `after_step(step, total_steps)`.
    """

    def __init__(self, backbone, out_dim: int = 1024, hidden_dim: int = 512, bottleneck_dim: int = 128,
                 student_temperature: float = 0.1, teacher_temperature: float = 0.07,
                 warmup_teacher_temperature: float = 0.04, teacher_temperature_warmup_steps: int = 300,
                 center_momentum: float = 0.9, momentum: float = 0.99, local_crops: int = 4, local_size: int = 16,
                 local_scale: tuple[float, float] = (0.05, 0.4)):
        super().__init__(backbone)
        self.view_spec = multi_crop_spec("dino", local_crops, local_size, local_scale)
        check_size("dino", "out_dim", out_dim)
        check_size("dino", "hidden_dim", hidden_dim)
        check_size("dino", "bottleneck_dim", bottleneck_dim)
        positive = lambda v: v > 0  # noqa: E731
        self.student_temperature = check_option("dino", "student_temperature", student_temperature, "a number > 0", positive)
        self.teacher_temperature = check_option("dino", "teacher_temperature", teacher_temperature, "a number > 0", positive)
        self.warmup_teacher_temperature = check_option("dino", "warmup_teacher_temperature", warmup_teacher_temperature,
                                                       "a number > 0", positive)
        self.warmup_steps = check_option("dino", "teacher_temperature_warmup_steps", teacher_temperature_warmup_steps,
                                         "an integer >= 0", lambda v: v >= 0, integer=True)
        in_unit = lambda v: 0 <= v < 1  # noqa: E731
        self.center_momentum = check_option("dino", "center_momentum", center_momentum, "a number in [0, 1)", in_unit)
        self.momentum = check_option("dino", "momentum", momentum, "a number in [0, 1)", in_unit)
        self.head = DINOHead(backbone.feature_dim, out_dim, hidden_dim, bottleneck_dim)
        # Teacher: backbone + head, a copy that only EMA updates move.
        self.teacher_backbone = frozen_copy(self.backbone)
        self.teacher_head = frozen_copy(self.head)
        self.register_buffer("center", torch.zeros(out_dim))
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))  # optimizer steps so far
        self._new_center = None  # this step's updated centre until after_step applies it

    def current_teacher_temperature(self) -> float:
        return teacher_temperature(int(self.steps_done), self.warmup_steps, self.warmup_teacher_temperature,
                                   self.teacher_temperature)

    def forward(self, views, labels):
        n, globals_ = views[0].shape[0], self.view_spec.global_views
        student = self.head(encode_views(self.backbone, views)).view(len(views), n, -1)  # (V, N, out_dim)
        with torch.no_grad():
            teacher = self.teacher_head(self.teacher_backbone(torch.cat(views[:globals_]))).view(globals_, n, -1)
        temperature = self.current_teacher_temperature()
        loss = dino_loss(student, teacher, self.center, self.student_temperature, temperature)
        if self.training:
            self._new_center = dino_center(self.center, teacher, self.center_momentum)
        with torch.no_grad():
            p = torch.softmax((at_least_float32(teacher) - self.center) / temperature, dim=-1)
            entropy = -(p * torch.log(p.clamp_min(1e-12))).sum(-1).mean()
        return loss, {"teacher_entropy": entropy}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        m = target_momentum(self.momentum, step, total_steps)
        ema_update(self.teacher_backbone, self.backbone, m)
        ema_update(self.teacher_head, self.head, m)
        self.steps_done.fill_(step + 1)
        if self._new_center is not None:
            self.center.copy_(self._new_center)
            self._new_center = None
