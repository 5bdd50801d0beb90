"""Label efficiency: how good is the encoder when only a fraction of the labels exists?

For each fraction f of the labels, a stratified subset of the training split (f of it, at least one
image per class) is what a classifier may learn from, and a stratified subset of the validation
split (f of it, at least `MIN_VAL_PER_CLASS` per class) is all there is to choose hyper-parameters
on: a user with 600 labels does not also have 5,000 labelled validation images. The subsets are
prefixes of one seeded stratified order of each split, so they are nested (the 1% subset lies inside
the 10% one) and the same for the same seed.

The classifiers of each fraction, each scored on the test set once:
- probe: `evaluate.linear_probe` on the frozen features (extracted once for every fraction), its
  weight decay chosen on the validation subset, refitted on the training + validation subsets;
- fine-tune (optional): the pretrained encoder and a linear head trained together on the subset;
- scratch: the same routine from a random initialisation of the same architecture, the
  supervised-from-scratch baseline that self-supervision has to beat;
- FixMatch (optional): semi-supervised fine-tuning, which also learns from every training image
  without its label (`train_fixmatch`), from the pretrained encoder and, as its baseline, from the
  same random initialisation as scratch; each head starts from the probe on its starting encoder's
  features of the training subset.

Fine-tuning runs a fixed number of optimisation steps whatever the subset size (600 images would be
under-trained by any epoch count that suits 55,000): AdamW with warm-up and cosine decay, one
augmented view per image (the run's augmentation made lighter, `FINETUNE_AUGMENT`), batches drawn
from successive shuffles of the subset. Its settings are fixed, not chosen on validation; the
validation-subset accuracy is reported beside the test accuracy.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from . import augment
from .data import Dataset, Split, stratified_order
from .device import at_least_float32
from .errors import UserError
from .losses import distribution_aligned, fixmatch_loss
from .methods.base import ema_update, frozen_copy
from .methods.supervised import Supervised
from .optim import build_optimizer
from .probe import (accuracy, best_weight_decay, count_classes, extract_features, feature_statistics, linear_probe,
                    on_raw_features, probe_on_validation)
from .schedules import warmup_cosine
from .train import train_step

MIN_VAL_PER_CLASS = 10
# The classifiers of each fraction, as results name them (`{key}_test_acc`) and as tables label them.
LABEL_EFFICIENCY_CLASSIFIERS = (("probe", "linear probe (frozen)"), ("finetune", "fine-tuned"),
                                ("scratch", "from scratch"), ("fixmatch", "FixMatch (+ unlabelled images)"),
                                ("fixmatch_scratch", "FixMatch from scratch"))
# Lighter than pretraining's views: a classifier learns from what the crop keeps, and blur hides it.
FINETUNE_AUGMENT = {"crop_scale": (0.5, 1.0), "blur_p": 0.0}
# FixMatch's two views of an image, each applied to the run's augmentation: the weak one, whose
# confident predictions become pseudo-labels (crop and flip, as the paper's flip and shift), and
# the strong one that must match them (pretraining's views with random erasing, in place of the
# paper's RandAugment and Cutout). Its other settings are the paper's (the threshold and the
# unlabelled images per labelled one: `LabelFractions`): the unlabelled term at weight 1, batch 64
# of labelled images. Checked on the validation split (docs/benchmarks.md, "FixMatch at 1%").
FIXMATCH_WEAK_AUGMENT = {"crop_scale": (0.7, 1.0), "jitter_p": 0.0, "blur_p": 0.0}
FIXMATCH_STRONG_AUGMENT = {"erase_p": 0.5}
FIXMATCH_BATCH = 64
# Distribution alignment's running mean prediction, as USB's FixMatch with alignment (about the last
# 1,000 batches).
ALIGNMENT_MOMENTUM = 0.999
# How often `train_fixmatch` calls its monitor: six times in the default 3,000 steps, a curve for a
# few seconds each (the benchmark's monitor scores 10,000 images; a run takes 7-8 minutes).
MONITOR_EVERY = 500
# What `train_fixmatch` calls its monitor with: (steps done, the classifier in eval mode).
Monitor = Callable[[int, nn.Module], None]
EXAMPLE = "pass fractions of the labels in (0, 1], e.g. --label-fractions 0.01,0.1,1.0"


@dataclass(frozen=True)
class LabelFractions:
    """What `fashionssl evaluate --label-fractions` runs; the module docstring has the protocol."""

    fractions: tuple[float, ...]
    finetune: bool = False  # also fine-tune the pretrained encoder (the scratch baseline always runs)
    steps: int = 500  # optimisation steps of every fine-tuning and scratch run (233 epochs of 1%, 2.3 of 100%)
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.05  # AdamW's decoupled decay, on weights only (not biases and norms)
    seed: int = 0  # subsets, initialisation, batch order and augmentation
    fixmatch: bool = False  # also fine-tune semi-supervised, with the unlabelled training images
    # FixMatch's steps at the same lr and weight decay, checked on the validation split at 1% of the
    # labels against twice as many; for cnn-bn-wide-4x4 on 2 cores of an Intel Xeon with AMX, a 1%
    # row with both FixMatch runs took 10-14.5 minutes (docs/benchmarks.md, "FixMatch at 1%").
    fixmatch_steps: int = 3000
    fixmatch_threshold: float = 0.95  # the weak view's top class probability that makes a pseudo-label
    # unlabelled images per labelled one in each batch: the paper's 7 scored the same on validation
    # for 1.7-1.8x the time (docs/benchmarks.md, "FixMatch at 1%")
    fixmatch_unlabelled_ratio: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "fractions", check_fractions(self.fractions))
        for name, option in (("steps", "--finetune-steps"), ("batch_size", "LabelFractions.batch_size"),
                             ("fixmatch_steps", "--fixmatch-steps"),
                             ("fixmatch_unlabelled_ratio", "LabelFractions.fixmatch_unlabelled_ratio")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"fine-tuning {name} must be an integer >= 1, got {value!r}; fix {option}")
        threshold = self.fixmatch_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
            raise UserError(f"FixMatch's confidence threshold must be in (0, 1], got {threshold!r}; "
                            "fix LabelFractions.fixmatch_threshold")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"the label subsets' seed must be an integer >= 0, got {self.seed!r}; fix --label-seed")

    def protocol(self) -> str:
        fixmatch = [
            f"FixMatch: the pretrained encoder (and, as its baseline, scratch's initialisation), its head started "
            f"from the probe on its features of the training subset, "
            f"trained {self.fixmatch_steps} steps on batches of {FIXMATCH_BATCH} labelled images and "
            f"{self.fixmatch_unlabelled_ratio * FIXMATCH_BATCH} images of the whole training split without their "
            f"labels (pseudo-labels from weak views {FIXMATCH_WEAK_AUGMENT} at confidence >= "
            f"{self.fixmatch_threshold:g}, "
            f"learnt on strong views: the run's augmentation with {FIXMATCH_STRONG_AUGMENT}), AdamW lr {self.lr:g}, "
            f"weight decay {self.weight_decay:g}, warm-up + cosine",
        ] if self.fixmatch else []
        return "; ".join([
            "training subset: a stratified fraction of the training split (at least 1 per class); validation "
            f"subset: the same fraction of the validation split (at least {MIN_VAL_PER_CLASS} per class), the only "
            f"labels used to choose anything; subsets nested, seed {self.seed}",
            "probe: frozen features, weight decay chosen on the validation subset, refit on training + validation "
            "subsets",
            f"fine-tune and scratch: encoder + linear head trained on the training subset, AdamW lr {self.lr:g}, "
            f"weight decay {self.weight_decay:g}, {self.steps} steps of batch {self.batch_size} whatever the "
            f"subset size (fixed, not chosen on validation), warm-up + cosine, one augmented view per image "
            f"(the run's augmentation with {FINETUNE_AUGMENT}); scratch = the same architecture, randomly initialised",
            *fixmatch,
            "test split used once per fraction and classifier",
        ])


def same_scratch_baseline(by_run: Sequence[dict]) -> bool:
    """Whether several runs' `label_fractions` results hold the same from-scratch accuracies (the
    same architecture, seed and fractions), so that one baseline can stand for all of them."""
    return len({repr(sorted((f, row.get("scratch_test_acc")) for f, row in results.items()))
                for results in by_run}) == 1


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Sorted, de-duplicated fractions, each a number in (0, 1]; anything else is a UserError."""
    if not fractions:
        raise UserError(f"no label fractions given; {EXAMPLE}")
    for f in fractions:
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1:
            raise UserError(f"label fraction {f!r} is not in (0, 1]; {EXAMPLE}")
    return tuple(sorted({float(f) for f in fractions}))


def parse_fractions(text: str) -> tuple[float, ...]:
    """'0.01,0.1,1.0' -> (0.01, 0.1, 1.0), checked by `check_fractions`."""
    values = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        try:
            values.append(float(part))
        except ValueError:
            raise UserError(f"label fraction {part!r} is not a number; {EXAMPLE}") from None
    return check_fractions(values)


def subset_size(n: int, fraction: float, minimum: int) -> int:
    """round(fraction * n), raised to `minimum` and capped at n."""
    return min(n, max(minimum, round(fraction * n)))


def stratified_subset(labels: torch.Tensor, fraction: float, seed: int, minimum: int | None = None) -> torch.Tensor:
    """Sorted indices of a stratified `fraction` of `labels` (at least `minimum` of them, by default
    one per class): a prefix of a seeded stratified order, so for one seed a smaller fraction's
    subset lies inside a larger one's, and fraction 1 gives every index in order (the full-label
    data, exactly)."""
    order = stratified_order(labels, torch.Generator().manual_seed(seed))
    minimum = count_classes(labels) if minimum is None else minimum
    return order[:subset_size(len(labels), fraction, minimum)].sort().values


def label_subsets(data: Dataset, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, validation indices) of one fraction."""
    classes = len(data.info.class_names)
    return (stratified_subset(data.train.labels, fraction, seed, classes),
            stratified_subset(data.val.labels, fraction, seed, MIN_VAL_PER_CLASS * classes))


def take(split: Split, index: torch.Tensor) -> Split:
    return Split(split.images[index], split.labels[index])


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """`build()` with torch's global RNG seeded by `seed`, restoring the caller's RNG state after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def reinitialised(backbone: nn.Module, seed: int) -> nn.Module:
    """A copy of `backbone` whose every layer is reset (weights drawn afresh, BatchNorm statistics
    cleared): the same architecture as before any training."""
    def build() -> nn.Module:
        fresh = copy.deepcopy(backbone)
        for module in fresh.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return fresh
    return seeded(seed, build)


def batch_indices(n: int, steps: int, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """(steps, batch) indices into n items: successive random permutations, cut into batches."""
    epochs = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=generator) for _ in range(epochs)])
    return order[:steps * batch_size].view(steps, batch_size)


def train_classifier(backbone: nn.Module, train: Split, class_names: tuple[str, ...], aug: augment.AugmentConfig,
                     device: torch.device, settings: LabelFractions, autocast_dtype: torch.dtype | None = None,
                     desc: str = "fine-tune", head: nn.Linear | None = None) -> nn.Sequential:
    """Train `backbone` (modified in place) and a new linear head over `class_names` together on
    `train`: the `supervised` method, stepped by the training loop's own `train_step`; returns the
    classifier (backbone, head) in eval mode, mapping images to logits. `head`, if given, is where
    the new head starts (a linear probe's solution: LP-FT) instead of a random initialisation."""
    model = seeded(settings.seed, lambda: Supervised(backbone, class_names))
    if head is not None:
        model.classifier.load_state_dict(head.state_dict())
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer("adamw", model, settings.lr, settings.weight_decay)
    lrs = warmup_cosine(settings.lr, settings.steps, settings.steps // 20).tolist()
    batch = min(settings.batch_size, len(train))
    order = batch_indices(len(train), settings.steps, batch, torch.Generator().manual_seed(settings.seed)).to(device)
    images, labels = train.images.to(device), train.labels.to(device)
    generator = torch.Generator(device).manual_seed(settings.seed)
    model.train()
    for step in tqdm(range(settings.steps), desc=desc, unit="step", dynamic_ncols=True, mininterval=1.0,
                     leave=False, disable=None):
        index = order[step]
        views = [v.contiguous(memory_format=torch.channels_last)
                 for v in augment.views(images[index], aug, generator, model.view_spec)]
        loss = train_step(model, model, optimizer, views, labels[index], lrs[step], step, settings.steps,
                          autocast_dtype)["loss"].item()
        if not math.isfinite(loss):
            raise UserError(f"{desc}: loss became {loss} at step {step + 1}; lower the fine-tuning lr")
    return nn.Sequential(model.backbone, model.classifier).eval()


class FixMatch(Supervised):
    """FixMatch's objective (Sohn et al., 2020, "Simplifying semi-supervised learning with consistency
    and confidence") as a method the training loop's `train_step` can step: the cross entropy of the
    labelled images plus `fixmatch_loss` between a weak and a strong view of each unlabelled one.
    `views` are (labelled, unlabelled weak, unlabelled strong), encoded in one forward pass, so
    BatchNorm normalises them together, as the paper does."""

    def __init__(self, backbone, class_names: tuple[str, ...], class_prior: torch.Tensor | None = None,
                 threshold: float = LabelFractions.fixmatch_threshold):
        super().__init__(backbone, class_names)
        self.threshold = threshold
        aligns = class_prior is not None
        self.register_buffer("class_prior", class_prior.float() if aligns else None)
        self.register_buffer("prediction_average", torch.zeros(len(class_names)) if aligns else None)

    def forward(self, views, labels):
        logits = at_least_float32(self.classifier(self.backbone(torch.cat(views))))
        labelled_logits, weak_logits, strong_logits = logits.split([len(v) for v in views])
        if self.class_prior is not None:
            weak_logits = self.aligned(weak_logits)
        unlabelled_loss, confident = fixmatch_loss(weak_logits, strong_logits, self.threshold)
        return F.cross_entropy(labelled_logits, labels) + unlabelled_loss, {"confident": confident}

    @torch.no_grad()
    def aligned(self, weak_logits: torch.Tensor) -> torch.Tensor:
        """The weak views' logits shifted by `distribution_aligned` towards `class_prior`, against the
        running mean of the weak views' predictions: an exponential moving average at
        ALIGNMENT_MOMENTUM, started from zero. Only its proportions matter (a constant factor shifts
        every logit alike), so the first steps need no bias correction."""
        self.prediction_average.lerp_(torch.softmax(weak_logits, 1).mean(0), 1 - ALIGNMENT_MOMENTUM)
        return distribution_aligned(weak_logits, self.prediction_average, self.class_prior)


def train_fixmatch(backbone: nn.Module, head: nn.Linear, train: Split, unlabelled: torch.Tensor,
                   aug: augment.AugmentConfig, device: torch.device, settings: LabelFractions,
                   autocast_dtype: torch.dtype | None = None, average: float | None = None,
                   align: bool = False, monitor: Monitor | None = None) -> nn.Sequential:
    """`FixMatch` from `backbone` (modified in place) and a copy of `head`: the labelled images of
    `train` and the `unlabelled` images (uint8, labels never seen), `settings.fixmatch_unlabelled_ratio`
    of them per labelled one in each batch. Returns the classifier in eval mode. The weak and strong
    views are `aug` changed by FIXMATCH_WEAK_AUGMENT / _STRONG_AUGMENT. With `average` (a momentum,
    e.g. the paper's 0.999), the classifier returned holds an exponential moving average of the
    weights over the steps, as the paper evaluates, with the last step's BatchNorm statistics. With
    `align`, the pseudo-labels are distribution-aligned (`FixMatch.aligned`) to the class
    frequencies of `train`'s labels. `monitor`, if given, is called with the step count and the
    classifier (in eval mode; the current weights, not their average) every MONITOR_EVERY steps, to
    watch the pseudo-labels as they form; it must not train or draw random numbers, and then the
    run is the same as without it."""
    weak = dataclasses.replace(aug, **FIXMATCH_WEAK_AUGMENT)
    strong = dataclasses.replace(aug, **FIXMATCH_STRONG_AUGMENT)
    prior = torch.bincount(train.labels, minlength=head.out_features) / len(train) if align else None
    model = seeded(settings.seed, lambda: FixMatch(backbone, tuple(range(head.out_features)), prior,
                                                settings.fixmatch_threshold))
    model.classifier.load_state_dict(head.state_dict())
    model = model.to(device).to(memory_format=torch.channels_last)
    optimizer = build_optimizer("adamw", model, settings.lr, settings.weight_decay)
    steps = settings.fixmatch_steps
    lrs = warmup_cosine(settings.lr, steps, steps // 20).tolist()
    order = torch.Generator().manual_seed(settings.seed)
    batch = min(FIXMATCH_BATCH, len(train))
    labelled_order = batch_indices(len(train), steps, batch, order).to(device)
    per_batch = settings.fixmatch_unlabelled_ratio * batch
    unlabelled_order = batch_indices(len(unlabelled), steps, per_batch, order).to(device)
    images, labels, unlabelled = train.images.to(device), train.labels.to(device), unlabelled.to(device)
    generator = torch.Generator(device).manual_seed(settings.seed)
    averaged = None if average is None else frozen_copy(model)
    model.train()
    for step in tqdm(range(steps), desc="FixMatch", unit="step", dynamic_ncols=True, mininterval=1.0, leave=False,
                     disable=None):
        pool = unlabelled[unlabelled_order[step]]
        views = [augment.augment(images[labelled_order[step]], weak, generator), augment.augment(pool, weak, generator),
                 augment.augment(pool, strong, generator)]
        loss = train_step(model, model, optimizer, [v.contiguous(memory_format=torch.channels_last) for v in views],
                          labels[labelled_order[step]], lrs[step], step, steps, autocast_dtype)["loss"].item()
        if not math.isfinite(loss):
            raise UserError(f"FixMatch: loss became {loss} at step {step + 1}; lower the fine-tuning lr")
        if averaged is not None:
            ema_update(averaged, model, average)
        if monitor is not None and (step + 1) % MONITOR_EVERY == 0:
            monitor(step + 1, nn.Sequential(model.backbone, model.classifier).eval())
            model.train()
    if averaged is not None:
        with torch.no_grad():
            for mean, last in zip(averaged.buffers(), model.buffers(), strict=True):
                mean.copy_(last)
        model = averaged
    return nn.Sequential(model.backbone, model.classifier).eval()


def fixmatch_classifier(backbone: nn.Module, train: Split, val: Split, unlabelled: torch.Tensor,
                        class_names: tuple[str, ...], aug: augment.AugmentConfig, device: torch.device,
                        settings: LabelFractions, autocast_dtype: torch.dtype | None = None,
                        average: float | None = None, align: bool = False, monitor: Monitor | None = None,
                        ) -> nn.Sequential:
    """`train_fixmatch` from `backbone` (modified in place) with a head that already knows the
    labelled images: the linear probe on `backbone`'s features of `train`, at the weight decay
    `val` chooses."""
    train_xy, val_xy = [(extract_features(backbone, s.images, aug, device, autocast_dtype=autocast_dtype),
                         s.labels.to(device)) for s in (train, val)]
    val_accuracy, solutions = probe_on_validation(train_xy, val_xy, len(class_names))
    head = on_raw_features(solutions[best_weight_decay(val_accuracy)], *feature_statistics(train_xy[0]))
    return train_fixmatch(backbone, head, train, unlabelled, aug, device, settings, autocast_dtype, average, align,
                          monitor)


def classifier_accuracy(model: nn.Module, split: Split, aug: augment.AugmentConfig, device: torch.device,
                        autocast_dtype: torch.dtype | None = None) -> float:
    logits = extract_features(model, split.images, aug, device, autocast_dtype=autocast_dtype)
    return accuracy(logits.argmax(1), split.labels.to(device))


def label_fraction_results(settings: LabelFractions, backbone: nn.Module, data: Dataset,
                           splits: Sequence[tuple[torch.Tensor, torch.Tensor]], full_label_probe: dict,
                           aug: augment.AugmentConfig, device: torch.device,
                           autocast_dtype: torch.dtype | None = None) -> dict:
    """{fraction: results} for every fraction. `splits` are the (features, labels) of train, val and
    test already extracted from `backbone`, `full_label_probe` the `linear_probe` results on all of
    them (what a fraction with every label gets, without fitting it again). `backbone` is not
    modified: fine-tuning works on a copy."""
    (train_x, train_y), (val_x, val_y), test = splits
    train_aug = dataclasses.replace(aug, **FINETUNE_AUGMENT)
    results = {}
    for fraction in settings.fractions:
        start = time.perf_counter()
        train_idx, val_idx = label_subsets(data, fraction, settings.seed)
        train_dev, val_dev = train_idx.to(train_x.device), val_idx.to(val_x.device)
        if len(train_idx) == len(train_y) and len(val_idx) == len(val_y):
            probe = full_label_probe  # the subsets are the whole splits, in order: the same fit
        else:
            probe = linear_probe((train_x[train_dev], train_y[train_dev]), (val_x[val_dev], val_y[val_dev]), test)
        row = {"n_train_labels": len(train_idx), "n_val_labels": len(val_idx),
               "n_labels": len(train_idx) + len(val_idx),
               "probe_test_acc": probe["linear_probe_test_acc"], "probe_val_acc": probe["linear_probe_val_acc"],
               "weight_decay": probe["linear_probe_weight_decay"]}
        train, val = take(data.train, train_idx), take(data.val, val_idx)
        runs = {"scratch": reinitialised(backbone, settings.seed)}
        if settings.finetune:
            runs = {"finetune": copy.deepcopy(backbone), **runs}
        classifiers = {name: train_classifier(start_from, train, data.info.class_names, train_aug, device, settings,
                                              autocast_dtype, desc=f"{name} {fraction:g}")
                       for name, start_from in runs.items()}
        if settings.fixmatch:
            starts = {"fixmatch": copy.deepcopy(backbone), "fixmatch_scratch": reinitialised(backbone, settings.seed)}
            classifiers |= {name: fixmatch_classifier(start_from, train, val, data.train.images, data.info.class_names,
                                                      aug, device, settings, autocast_dtype)
                            for name, start_from in starts.items()}
        for name, model in classifiers.items():
            row[f"{name}_val_acc"] = classifier_accuracy(model, val, aug, device, autocast_dtype)
            row[f"{name}_test_acc"] = classifier_accuracy(model, data.test, aug, device, autocast_dtype)
        row["seconds"] = round(time.perf_counter() - start, 2)
        results[f"{fraction:g}"] = row
    return results
