"""Supervised reference: the same encoder and augmentation, trained with the labels.

Cross entropy of a linear classifier on the backbone's features, one augmented view per image. The
labels are class indices, or class probabilities (a teacher's, for distillation). It is the upper
reference the self-supervised methods are compared with; tables mark it as using labels.
"""

import torch.nn.functional as F
from torch import nn

from ..augment import ViewSpec
from ..device import at_least_float32
from .base import Method, check_option


class Supervised(Method):
    """A linear classifier over `class_names`. Options: label_smoothing of the cross entropy (0 =
    plain cross entropy)."""

    view_spec = ViewSpec(global_views=1)
    needs_sync_batchnorm = False  # a per-sample loss: per-rank BatchNorm statistics do
    uses_labels = True

    def __init__(self, backbone, class_names: tuple[str, ...], label_smoothing: float = 0.0):
        super().__init__(backbone)
        self.label_smoothing = check_option("supervised", "label_smoothing", label_smoothing, "a number in [0, 1)",
                                            lambda v: 0 <= v < 1)
        self.classifier = nn.Linear(backbone.feature_dim, len(class_names))

    def forward(self, views, labels):
        logits = self.classifier(self.backbone(views[0]))  # (N, classes)
        loss = F.cross_entropy(at_least_float32(logits), labels, label_smoothing=self.label_smoothing)
        classes = labels if labels.dim() == 1 else labels.argmax(1)  # soft labels: their most likely class
        return loss, {"train_acc": (logits.detach().argmax(1) == classes).float().mean()}
