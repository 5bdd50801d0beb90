"""Headroom at few labels: variants of the label-efficiency protocol on one encoder, scored on the
whole validation split (5,000 images; never the test split), so that they may be compared and
chosen between without touching the test set.

    .venv/bin/python benchmarks/bench_low_label.py runs/bench10/simclr --fraction 0.01

Rows: the frozen linear probe fitted on the labelled training subset at each weight decay; kNN with
that subset as the bank at several k; the label-efficiency routine's fine-tuning of the encoder and
its from-scratch baseline (`label_efficiency.train_classifier`, the settings of `evaluate
--label-fractions --finetune`); on request, variants of that routine: other lrs and step counts,
the head started from the best probe's solution (LP-FT), BatchNorm's statistics recomputed after
training, the fine-tuned classifier distilled into the pretrained encoder over every training
image, labelled or not (`distill`), and FixMatch from the pretrained encoder at several step counts
(`label_efficiency.fixmatch_classifier`, the settings of `evaluate --fixmatch`), its confidence
threshold and unlabelled images per labelled one changed on request, and with `--fixmatch-monitor`
its pseudo-labels watched as they form (`pseudo_label_monitor`).

    .venv/bin/python benchmarks/bench_low_label.py runs/main-fold --distill-steps 500,2000 \
        --finetune-lrs 3e-4,1e-4 --finetune-steps 1500 --lp-ft-lrs 1e-3,3e-4,1e-4 --recalibrate
    .venv/bin/python benchmarks/bench_low_label.py runs/sweep-methods-4x4/swav-lr-4e-3 --fixmatch-steps 3000,6000
    .venv/bin/python benchmarks/bench_low_label.py runs/sweep-methods-4x4/swav-lr-4e-3 --label-seed 2 \
        --fixmatch-steps 3000 --fixmatch-ratio 7 --fixmatch-monitor
"""

import argparse
import copy
import dataclasses
import time

import torch
from torch import nn

from fashionssl.augment import AugmentConfig, normalize
from fashionssl.data import Split
from fashionssl.device import autocast_dtype, resolve_device
from fashionssl.evaluate import load_data_for, load_trained
from fashionssl.label_efficiency import (FINETUNE_AUGMENT, MONITOR_EVERY, LabelFractions, Monitor,
                                         classifier_accuracy, fixmatch_classifier, label_subsets, reinitialised, take,
                                         train_classifier)
from fashionssl.probe import (accuracy, extract_features, feature_statistics, fit_linear_classifier, knn_predict,
                              on_raw_features, standardize)

WEIGHT_DECAYS = (10, 3, 1, 0.3, 0.1, 0.03, 0.01, 1e-3)
KNN_K = (10, 20, 50)
MONITOR_POOL = 5000  # training images whose pseudo-labels --fixmatch-monitor follows


def distill(teacher: nn.Module, student: nn.Module, images: torch.Tensor, class_names: tuple[str, ...],
            aug: AugmentConfig, train_aug: AugmentConfig, device: torch.device, settings: LabelFractions,
            amp: torch.dtype | None = None) -> nn.Sequential:
    """SimCLRv2's third step (Chen et al., 2020, "Big self-supervised models are strong
    semi-supervised learners"): the fine-tuned classifier `teacher` gives every image of `images`
    (labelled or not) its class probabilities, and `student` (modified in place) with a new linear
    head learns them by `train_classifier`: cross entropy to the teacher's distribution at
    temperature 1, with no term for the few true labels, which the paper found unneeded when labels
    are scarce. The teacher sees each image once, unaugmented; the student sees `train_aug` views."""
    probabilities = torch.softmax(extract_features(teacher, images, aug, device, autocast_dtype=amp), 1)
    return train_classifier(student, Split(images, probabilities.cpu()), class_names, train_aug, device, settings,
                            amp, desc="distill")


@torch.no_grad()
def recalibrated(classifier: nn.Module, images: torch.Tensor, aug: AugmentConfig, device: torch.device,
                 amp: torch.dtype | None = None) -> nn.Module:
    """A copy of `classifier` whose BatchNorm running statistics are recomputed over `images`,
    unaugmented (the average of batches of 1024): training left statistics of augmented views."""
    model = copy.deepcopy(classifier)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the batches
    model.train()
    for start in range(0, len(images), 1024):
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            model(normalize(images[start:start + 1024].to(device), aug).contiguous(memory_format=torch.channels_last))
    return model.eval()


def pseudo_label_monitor(pool: Split, val: Split, threshold: float, aug: AugmentConfig, device: torch.device,
                         amp: torch.dtype | None, rows: list[str]) -> Monitor:
    """A `train_fixmatch` monitor appending one table row to `rows` at each call: the validation
    accuracy so far, and on `pool` (unlabelled images whose labels only this benchmark reads) the
    fraction predicted with confidence >= `threshold` and the accuracy of those predictions, the
    pseudo-labels FixMatch would learn (here of the unaugmented images, not its weak views, and
    before any distribution alignment), and the largest share one class takes of them: confirmation
    bias shows as wrong confident predictions, or as one class taking over. About 1% of `pool` may
    be labelled images too, as FixMatch's own pool holds them."""
    pool_y, val_y = pool.labels.to(device), val.labels.to(device)

    def monitor(step: int, classifier: nn.Module) -> None:
        probabilities = torch.softmax(extract_features(classifier, pool.images, aug, device, autocast_dtype=amp), 1)
        confidence, predicted = probabilities.max(1)
        confident = confidence >= threshold
        shares = torch.bincount(predicted[confident], minlength=probabilities.shape[1]) / confident.sum().clamp_min(1)
        val_acc = classifier_accuracy(classifier, val, aug, device, amp)
        right = f"{100 * accuracy(predicted[confident], pool_y[confident]):.2f}%" if confident.any() else "-"
        rows.append(f"| {step} | {100 * val_acc:.2f}% | {100 * confident.float().mean().item():.1f}% | {right} | "
                    f"{100 * accuracy(predicted, pool_y):.2f}% | {100 * shares.max().item():.1f}% |")
    return monitor


def numbers(text: str, kind: type) -> list:
    return [kind(part) for part in text.split(",") if part]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--fraction", type=float, default=0.01)
    p.add_argument("--label-seed", type=int, default=0,
                   help="seed of the labelled subset and of the classifiers trained on it, as evaluate's")
    p.add_argument("--data", "--data-dir", dest="data")
    p.add_argument("--distill-steps", default="", help="comma list of distillation step counts (none by default)")
    p.add_argument("--finetune-lrs", default="", help="comma list of other fine-tuning lrs, at the routine's steps")
    p.add_argument("--finetune-steps", default="", help="comma list of other fine-tuning step counts, at its lr")
    p.add_argument("--lp-ft-lrs", default="", help="comma list of lrs to fine-tune at from the best probe's head")
    p.add_argument("--fixmatch-steps", default="", help="comma list of FixMatch step counts (none by default)")
    p.add_argument("--fixmatch-average", type=float,
                   help="score FixMatch's exponential moving average of the weights at this momentum (e.g. 0.999)")
    p.add_argument("--fixmatch-align", action="store_true",
                   help="FixMatch with distribution alignment of its pseudo-labels to the labelled images' classes")
    p.add_argument("--fixmatch-threshold", type=float, default=LabelFractions.fixmatch_threshold,
                   help="FixMatch's confidence threshold for a pseudo-label")
    p.add_argument("--fixmatch-ratio", type=int, default=LabelFractions.fixmatch_unlabelled_ratio,
                   help="FixMatch's unlabelled images per labelled one in each batch")
    p.add_argument("--fixmatch-monitor", action="store_true",
                   help=f"print FixMatch's pseudo-labels on {MONITOR_POOL} training images (their hidden labels read "
                        f"here only) and its validation accuracy every {MONITOR_EVERY} steps")
    p.add_argument("--recalibrate", action="store_true",
                   help="also score the fine-tuned and scratch classifiers with BatchNorm statistics recomputed "
                        "on the unaugmented labelled images, and on all training images")
    a = p.parse_args()
    settings = LabelFractions((a.fraction,), finetune=True, seed=a.label_seed, fixmatch_threshold=a.fixmatch_threshold,
                              fixmatch_unlabelled_ratio=a.fixmatch_ratio)  # checked before any minutes are spent
    trained = load_trained(a.run_dir)
    cfg, model, epochs = trained.config, trained.model, trained.epochs
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.precision, device)
    data = load_data_for(trained, a.data)
    aug = trained.augmentation()
    backbone = model.backbone.to(device)
    train_idx, val_idx = label_subsets(data, a.fraction, seed=a.label_seed)
    train = take(data.train, train_idx)
    val_y = data.val.labels.to(device)
    print(f"{time.strftime('%Y-%m-%d')}, {cfg.method} {cfg.encoder} {epochs} epochs ({a.run_dir}), "
          f"{len(train)} labelled training images (label seed {a.label_seed}); accuracy on all {len(data.val)} validation images\n")
    print("| classifier | validation accuracy |\n|---|---:|")

    features = [extract_features(backbone, s.images, aug, device, autocast_dtype=amp) for s in (train, data.val)]
    x, val_x = standardize(*features)
    y, previous, best = train.labels.to(device), None, (-1.0, None)
    for wd in WEIGHT_DECAYS:  # strong to weak, each fit warm-started from the previous one
        previous = fit_linear_classifier(x, y, wd, len(data.info.class_names), init=previous)
        val_acc = accuracy(previous(val_x).argmax(1), val_y)
        best = max(best, (val_acc, previous), key=lambda pair: pair[0])
        print(f"| frozen probe, weight decay {wd:g} | {100 * val_acc:.2f}% |")
    for k in KNN_K:  # cosine similarity of the raw features, as evaluation's kNN
        print(f"| kNN, k = {k} | {100 * accuracy(knn_predict(features[0], y, features[1], k=k), val_y):.2f}% |")

    train_aug = dataclasses.replace(aug, **FINETUNE_AUGMENT)
    classifiers = {}
    for name, start in (("fine-tuned", copy.deepcopy(backbone)), ("from scratch", reinitialised(backbone, settings.seed))):
        classifiers[name] = train_classifier(start, train, data.info.class_names, train_aug, device, settings, amp, desc=name)
        print(f"| {name} ({settings.steps} steps) | "
              f"{100 * classifier_accuracy(classifiers[name], data.val, aug, device, amp):.2f}% |")
    if a.recalibrate:
        for name, classifier in classifiers.items():
            for what, images in ((f"the {len(train)} labelled", train.images), (f"all {len(data.train)} training",
                                                                                data.train.images)):
                model = recalibrated(classifier, images, aug, device, amp)
                print(f"| {name}, BatchNorm statistics recomputed on {what} images | "
                      f"{100 * classifier_accuracy(model, data.val, aug, device, amp):.2f}% |")
    variants = ([(f"fine-tuned, lr {lr:g} ({settings.steps} steps)", dataclasses.replace(settings, lr=lr), None)
                 for lr in numbers(a.finetune_lrs, float)]
                + [(f"fine-tuned ({steps} steps)", dataclasses.replace(settings, steps=steps), None)
                   for steps in numbers(a.finetune_steps, int)])
    if a.lp_ft_lrs:
        head = on_raw_features(best[1], *feature_statistics(features[0]))  # the best probe, as the head's start
        variants += [(f"LP-FT: fine-tuned from the best probe's head, lr {lr:g} ({settings.steps} steps)",
                      dataclasses.replace(settings, lr=lr), head) for lr in numbers(a.lp_ft_lrs, float)]
    for name, variant, head in variants:
        classifier = train_classifier(copy.deepcopy(backbone), train, data.info.class_names, train_aug, device,
                                      variant, amp, desc=name, head=head)
        print(f"| {name} | {100 * classifier_accuracy(classifier, data.val, aug, device, amp):.2f}% |")
    for steps in numbers(a.distill_steps, int):
        student = distill(classifiers["fine-tuned"], copy.deepcopy(backbone), data.train.images, data.info.class_names,
                          aug, train_aug, device, dataclasses.replace(settings, steps=steps), amp)
        print(f"| fine-tuned, then distilled on all {len(data.train)} training images ({steps} steps) | "
              f"{100 * classifier_accuracy(student, data.val, aug, device, amp):.2f}% |")
    # the monitor's images: one draw, so that every run of a study is watched on the same ones
    pool = take(data.train, torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:MONITOR_POOL])
    for steps in numbers(a.fixmatch_steps, int):  # its head's weight decay chosen on the validation subset
        rows = []
        monitor = (pseudo_label_monitor(pool, data.val, a.fixmatch_threshold, aug, device, amp, rows)
                   if a.fixmatch_monitor else None)
        classifier = fixmatch_classifier(copy.deepcopy(backbone), train, take(data.val, val_idx), data.train.images,
                                         data.info.class_names, aug, device,
                                         dataclasses.replace(settings, fixmatch_steps=steps), amp, a.fixmatch_average,
                                         a.fixmatch_align, monitor)
        suffix = "" if a.fixmatch_average is None else f", weights averaged at momentum {a.fixmatch_average:g}"
        suffix += ", distribution alignment" if a.fixmatch_align else ""
        suffix += f", threshold {a.fixmatch_threshold:g}, {a.fixmatch_ratio} unlabelled per labelled"
        print(f"| FixMatch from the pretrained encoder, with all {len(data.train)} training images unlabelled "
              f"({steps} steps{suffix}) | {100 * classifier_accuracy(classifier, data.val, aug, device, amp):.2f}% |")
        if rows:
            print(f"\n| FixMatch step | validation accuracy | confident (of {MONITOR_POOL} training images) | "
                  "confident ones right | all right | largest class share of the confident |\n"
                  "|---:|---:|---:|---:|---:|---:|", *rows, "", sep="\n")


if __name__ == "__main__":
    main()
