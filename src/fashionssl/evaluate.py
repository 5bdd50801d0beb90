"""Evaluating a trained run: its checkpoint read back, its frozen backbone judged on the data it was
trained on (or other data of the same kind) by probe.py's linear probe and kNN, optionally by
label efficiency, and the results written to results.json.

Features are extracted once for every split; the protocol is probe.py's, and every number in
results.json names it. The test split is used once, for the reported numbers.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .augment import AugmentConfig, make_config
from .checkpoint import first_line, load_checkpoint, load_into, resolve_checkpoint
from .config import Config, config_from_dict
from .data import FASHION_MNIST_INFO, DataInfo, Dataset, load_dataset
from .device import autocast_dtype, resolve_device
from .errors import UserError
from .label_efficiency import LabelFractions, label_fraction_results
from .methods import Method, build_model
from .probe import evaluate_features, extract_features
from .runlog import write_json


def unevaluable(data: Dataset) -> str | None:
    """Why `data` cannot judge a backbone, or None: the probe and kNN need labelled training,
    validation and test images."""
    if not data.labelled:
        return f"{data.source} has no labels, so there is no linear probe or kNN; `fashionssl embed` gives the features"
    empty = [name for name in ("train", "val", "test") if not len(getattr(data, name))]
    if empty:
        return (f"{data.source} has no {' or '.join(empty)} images, so there is no linear probe or kNN; "
                "pretrain with a --val-size above 0")
    return None


def evaluate_backbone(backbone: nn.Module, data: Dataset, aug: AugmentConfig, device: torch.device,
                      batch_size: int = 1024, autocast_dtype: torch.dtype | None = None,
                      extra_evaluation: Callable[[dict], dict] | None = None,
                      label_fractions: LabelFractions | None = None) -> dict:
    """Extract features of every split once, then probe and kNN, `extra_evaluation` of the features
    by split name (see Method.extra_evaluation) and, with `label_fractions`, the label-efficiency
    comparison on the same features; returns results with timings."""
    start = time.perf_counter()
    splits = [
        (extract_features(backbone, s.images, aug, device, batch_size, autocast_dtype), s.labels.to(device))
        for s in (data.train, data.val, data.test)
    ]
    extracted = time.perf_counter()
    results = evaluate_features(*splits)
    if extra_evaluation is not None:
        results.update(extra_evaluation(dict(zip(("train", "val", "test"), splits))))
    results.update(
        protocol="frozen backbone features; linear probe: L-BFGS logistic regression on standardised "
                 "features, weight decay chosen on validation, refit on train+val; kNN: cosine, k=200, T=0.1, "
                 "bank = train+val; test split used once",
        feature_dim=splits[0][0].shape[1],
        train_size=len(data.train), val_size=len(data.val), test_size=len(data.test),
        feature_seconds=round(extracted - start, 2),
        eval_seconds=round(time.perf_counter() - start, 2),
    )
    if label_fractions is not None:
        results["label_fractions_protocol"] = label_fractions.protocol()
        results["label_fractions"] = label_fraction_results(label_fractions, backbone, data, splits, results, aug,
                                                            device, autocast_dtype)
    return results


@dataclass(frozen=True)
class Trained:
    """A checkpoint read back: its config, the model with its weights, the epochs trained and what
    it was trained on (checkpoints older than `DataInfo` were all trained on Fashion-MNIST)."""

    config: Config
    model: Method
    epochs: int
    info: DataInfo
    path: Path

    def augmentation(self) -> AugmentConfig:
        """The run's augmentation, normalising as training did."""
        return make_config(self.config.augment, self.info, **self.config.augment_options)


def load_trained(checkpoint: str | Path) -> Trained:
    """A run directory's or checkpoint file's training, with its weights loaded."""
    state, path = load_checkpoint(checkpoint), resolve_checkpoint(checkpoint)
    cfg = config_from_dict(state["config"], f"{path} config")
    try:
        info = DataInfo.from_dict(state["data"]) if "data" in state else FASHION_MNIST_INFO
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path}: damaged description of its data ({first_line(e)})") from None
    built_as = f"method {cfg.method!r} with encoder {cfg.encoder!r}"
    try:
        model = build_model(cfg, info)
    except UserError as e:  # options its method does not take: a damaged or hand-edited config
        raise UserError(f"checkpoint {path}: its config does not build {built_as}: {e}") from None
    load_into(model, state["model"], path, built_as)
    return Trained(cfg, model, state["epoch"], info, path)


def load_data_for(trained: Trained, data: str | None = None, data_dir: str | None = None) -> Dataset:
    """The data to judge `trained` on: `data` (a --data given now), Fashion-MNIST from the IDX
    folder `data_dir` (a --data-dir given now), or else the data it was trained on; split as
    training split it. Its images must be of the channels and size the encoder takes."""
    cfg = trained.config
    if data or data_dir:
        dataset = load_dataset(data, cfg.val_size, data_dir=None if data else data_dir)
    else:
        dataset = load_dataset(cfg.data, cfg.val_size, data_dir=cfg.data_dir)
    found, expected = dataset.info, trained.info
    if (found.channels, found.size) != (expected.channels, expected.size):
        raise UserError(f"{dataset.source} holds {found.channels}-channel {found.size}x{found.size} images but "
                        f"{trained.path} was trained on {expected.channels}-channel {expected.size}x{expected.size} "
                        "ones; pass --data with images like those it was trained on")
    return dataset


def evaluate_checkpoint(checkpoint: str | Path, data: str | None = None, device: str | None = None,
                        out: str | Path | None = None, label_fractions: LabelFractions | None = None,
                        data_dir: str | None = None) -> dict:
    """Evaluate a pretraining checkpoint's backbone on `data`, or Fashion-MNIST from `data_dir`
    (default: the data it was trained on);
    writes results.json beside it (or to `out`). With `label_fractions`, results also compare probe,
    fine-tuning and training from scratch on subsets of the labels (see label_efficiency.py).
    Data without labels gets results that say why there are no numbers."""
    trained = load_trained(checkpoint)
    cfg, model = trained.config, trained.model
    dataset = load_data_for(trained, data, data_dir)
    dev = resolve_device(device or cfg.device)
    results = {"method": cfg.method, "encoder": cfg.encoder, "uses_labels": model.uses_labels,
               "epochs": trained.epochs, "checkpoint": str(trained.path), "data": dataset.source,
               "class_names": dataset.info.class_names and list(dataset.info.class_names)}
    if model.uses_labels:
        results["label_use"] = model.label_use
    reason = unevaluable(dataset)
    if reason is not None:
        results["not_evaluated"] = reason
    else:
        model.to(dev)
        results.update(evaluate_backbone(model.backbone, dataset, trained.augmentation(), dev, cfg.eval_batch_size,
                                         autocast_dtype(cfg.precision, dev), model.extra_evaluation,
                                         label_fractions))
    write_json(Path(out) if out else trained.path.parent / "results.json", results)
    return results


def results_table(results: dict) -> str:
    """A small Markdown table of the headline numbers (or why there are none)."""
    title = f"{results.get('method', '?')} / {results.get('encoder', '?')}"
    if results.get("uses_labels"):
        title += f" ({results.get('label_use', 'uses labels')})"
    if "not_evaluated" in results:
        return f"{title}: not evaluated: {results['not_evaluated']}"
    rows = [("linear probe, test", f"{100 * results['linear_probe_test_acc']:.2f}%"),
            (f"  (weight decay {results['linear_probe_weight_decay']:g}, val)", f"{100 * results['linear_probe_val_acc']:.2f}%"),
            ("kNN (k=200, cosine), test", f"{100 * results['knn_test_acc']:.2f}%")]
    if "zero_shot_test_acc" in results:
        rows.append(("zero-shot (class prompts), test", f"{100 * results['zero_shot_test_acc']:.2f}%"))
    rows.append(("evaluation time", f"{results['eval_seconds']:.1f} s"))
    width = max(len(r[0]) for r in rows)
    lines = [f"| {title:<{width}} | accuracy |", f"|{'-' * (width + 2)}|----------|"]
    lines += [f"| {name:<{width}} | {value:>8} |" for name, value in rows]
    if "label_fractions" in results:
        lines += ["", label_fractions_table(results["label_fractions"])]
    return "\n".join(lines)


def label_fractions_table(by_fraction: dict) -> str:
    """Test accuracy per label fraction: probe, fine-tuning (when run) and training from scratch."""
    columns = [("linear probe", "probe_test_acc"), ("fine-tune", "finetune_test_acc"),
               ("from scratch", "scratch_test_acc"), ("FixMatch", "fixmatch_test_acc"),
               ("FixMatch from scratch", "fixmatch_scratch_test_acc")]
    columns = [c for c in columns if any(c[1] in row for row in by_fraction.values())]
    lines = ["| labels | train + val | " + " | ".join(name for name, _ in columns) + " |",
             "|-------:|------------:|" + "|".join("-" * (len(name) + 1) + ":" for name, _ in columns) + "|"]
    for fraction, row in by_fraction.items():
        cells = [f"{100 * row[key]:.2f}%".rjust(len(name)) for name, key in columns]
        lines.append(f"| {100 * float(fraction):>5g}% | {row['n_train_labels']:>5} + {row['n_val_labels']:<3} | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)
