"""CLIP (Radford et al., 2021): an image encoder and a text encoder trained so that each image's
embedding is closest to its own caption's, then zero-shot classification from class prompts.

The images have no captions: they are generated from the labels and the class names (captions.py),
so this method uses the labels, and everything that reports it says "captions derive from labels".
One augmented view per image; the image embedding is a projection head on the backbone's features,
the text embedding a bag of word embeddings with an MLP; symmetric InfoNCE with a learnable
temperature, its log-scale initialised to log(1/0.07) and capped at log(100) after every step, as in
CLIP.

Text encoder: the captions' meaning is the set of their words (a class noun and any attribute words
in a template), and word order carries nothing the generator varies, so a bag of embeddings loses
nothing a transformer would find; it costs almost nothing next to the image encoder on a CPU and
trains in a few hundred steps. Its vocabulary is the words the classes' captions can contain, so its
size follows from the class names, which the checkpoint keeps.

Reproducibility: captions are drawn from a generator seeded afresh each step from
(caption_seed, step), for the global batch (see sample_captions). caption_seed is drawn at construction from the global RNG (which the
loop seeds with cfg.seed) and `step` is set after every optimizer step from the loop's global step;
both are buffers, saved in the checkpoint, so a resumed run draws the same captions bitwise.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..augment import ViewSpec
from ..captions import CaptionSampler, caption_set
from ..device import at_least_float32
from ..distributed import gather, rank
from ..heads import mlp_head
from ..losses import clip_loss
from .base import Method, check_option, check_size

MAX_LOGIT_SCALE = 100.0  # CLIP: "clipped to prevent scaling the logits by more than 100"


class BagOfWords(nn.Module):
    """Text encoder: the mean of a caption's word embeddings (padding excluded), then an MLP."""

    def __init__(self, vocab_size: int, width: int, out_dim: int):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, width, padding_idx=0)
        self.mlp = mlp_head(width, width, out_dim, batch_norm=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids, 0 = padding -> (B, out_dim)."""
        mask = (tokens != 0).unsqueeze(-1).float()  # (B, L, 1)
        mean = (self.embedding(tokens) * mask).sum(1) / mask.sum(1).clamp_min(1)
        return self.mlp(mean)


class CLIP(Method):
    """Options: embed_dim of the joint space; hidden_dim of the image projection head; text_width of
    the word embeddings and text MLP; temperature, the initial temperature (then learnt)."""

    view_spec = ViewSpec(global_views=1)
    uses_labels = True
    label_use = "captions derive from labels"

    def __init__(self, backbone, class_names: tuple[str, ...], embed_dim: int = 128, hidden_dim: int = 512,
                 text_width: int = 256, temperature: float = 0.07):
        super().__init__(backbone)
        self.caption_set = caption_set(tuple(class_names))  # a function of the names, which checkpoints keep
        check_size("clip", "embed_dim", embed_dim)
        check_size("clip", "hidden_dim", hidden_dim)
        check_size("clip", "text_width", text_width)
        check_option("clip", "temperature", temperature, f"a number >= {1 / MAX_LOGIT_SCALE:g}",
                     lambda v: v >= 1 / MAX_LOGIT_SCALE)
        self.image_projector = mlp_head(backbone.feature_dim, hidden_dim, embed_dim)
        self.text_encoder = BagOfWords(len(self.caption_set.vocab), text_width, embed_dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.captions = CaptionSampler(self.caption_set)
        self.register_buffer("caption_seed", torch.randint(0, 2**62, ()))  # from the seeded global RNG
        self.register_buffer("step", torch.zeros((), dtype=torch.long))  # optimizer steps taken
        # The host's copy of (caption_seed, step): reading the buffers on a GPU would make every step
        # wait for the device. None until first needed, and again after a checkpoint is loaded.
        self._host_counters: tuple[int, int] | None = None
        self.register_load_state_dict_post_hook(lambda module, _: setattr(module, "_host_counters", None))

    def sample_captions(self, labels: torch.Tensor) -> torch.Tensor:
        """This step's captions (B, L) for `labels`: a function of (caption_seed, step) and the global
        batch's labels only. Under torchrun every rank draws the captions of the whole global batch
        (labels gathered; a few kB) and keeps its own rows, so N processes draw exactly the captions
        one process would."""
        if self._host_counters is None:
            self._host_counters = (int(self.caption_seed), int(self.step))
        seed = np.random.SeedSequence(list(self._host_counters)).generate_state(1, np.uint64)
        captions = self.captions(gather(labels), torch.Generator(labels.device).manual_seed(int(seed[0] >> 1)))
        return captions[rank() * len(labels):(rank() + 1) * len(labels)]

    def forward(self, views, labels):
        image = self.image_projector(self.backbone(views[0]))  # (N, embed_dim)
        text = self.text_encoder(self.sample_captions(labels))  # (N, embed_dim)
        scale = self.logit_scale.exp()
        return clip_loss(image, text, scale), {"logit_scale": scale.detach()}

    @torch.no_grad()
    def after_step(self, step, total_steps):
        self.logit_scale.clamp_(max=math.log(MAX_LOGIT_SCALE))
        self.step.fill_(step + 1)
        if self._host_counters is not None:
            self._host_counters = (self._host_counters[0], step + 1)

    @torch.no_grad()
    def class_embeddings(self) -> torch.Tensor:
        """(classes, embed_dim) zero-shot classifier: each class's prompts encoded and L2-normalised,
        their mean renormalised (CLIP's prompt ensembling)."""
        per_class = self.caption_set.prompts()
        tokens = self.caption_set.tokenize([p for ps in per_class for p in ps], self.caption_set.length)
        text = F.normalize(at_least_float32(self.text_encoder(tokens.to(self.step.device))), dim=1)
        return F.normalize(text.view(len(per_class), -1, text.shape[1]).mean(1), dim=1)

    @torch.no_grad()
    def zero_shot_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Backbone features (N, feature_dim) -> (N, classes) cosine similarities with the class embeddings."""
        image = F.normalize(at_least_float32(self.image_projector(features)), dim=1)
        return image @ self.class_embeddings().T

    def extra_evaluation(self, features):
        """Zero-shot accuracy on validation and test (heads in eval mode: BatchNorm running statistics)."""
        training = self.training
        self.eval()
        try:
            results = {f"zero_shot_{split}_acc": (self.zero_shot_logits(x).argmax(1) == y).float().mean().item()
                       for split, (x, y) in features.items() if split in ("val", "test")}
        finally:
            self.train(training)
        prompts = len(self.caption_set.prompt_templates)
        results["zero_shot_protocol"] = (f"image projection of the frozen backbone's features vs the mean normalised "
                                         f"text embedding of {prompts} prompt templates per class, cosine; "
                                         f"captions derive from labels")
        return results
