"""Score trained runs on the validation split only (the test split is never read): the linear probe
fitted on the training split at each weight decay of a grid, and kNN (k=200, bank = the training
split). `benchmarks/sweep.py` scores its trials with it; on its own it scores any run directory,
e.g. an earlier main job to set beside a sweep, or a wider weight-decay grid than evaluation's:

    .venv/bin/python benchmarks/validation_scores.py runs/main-now
    .venv/bin/python benchmarks/validation_scores.py runs/main-wide runs/main-now --weight-decays 1,0.3,0.1,0.03,0.01,0.001

`--recalibrate-batchnorm` first recomputes the backbone's BatchNorm statistics over the training
split's unaugmented images (training left statistics of augmented views), no labels involved.
"""

import argparse
import json
from pathlib import Path

from fashionssl.device import autocast_dtype, resolve_device
from fashionssl.evaluate import load_data_for, load_trained
from fashionssl.probe import WEIGHT_DECAYS, accuracy, best_weight_decay, extract_features, knn_predict, probe_on_validation
from bench_low_label import recalibrated


def score_on_validation(run_dir: Path, weight_decays: tuple[float, ...] = WEIGHT_DECAYS,
                        recalibrate_batchnorm: bool = False) -> dict:
    """Validation-only linear probe (best weight decay of the grid, and every one) and kNN of a run's backbone."""
    trained = load_trained(run_dir)
    cfg, backbone = trained.config, trained.model.backbone
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.precision, device)
    data, aug = load_data_for(trained), trained.augmentation()
    if recalibrate_batchnorm:
        backbone = recalibrated(backbone.to(device), data.train.images, aug, device, amp)
    train, val = [(extract_features(backbone.to(device), s.images, aug, device, cfg.eval_batch_size, amp),
                   s.labels.to(device)) for s in (data.train, data.val)]
    by_weight_decay, _ = probe_on_validation(train, val, len(data.info.class_names), weight_decays)
    best = best_weight_decay(by_weight_decay)
    return {"val_probe_acc": by_weight_decay[best], "probe_weight_decay": best,
            "val_probe_acc_by_weight_decay": {f"{wd:g}": acc for wd, acc in by_weight_decay.items()},
            "val_knn_acc": accuracy(knn_predict(train[0], train[1], val[0], num_classes=len(data.info.class_names)),
                                    val[1])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories")
    p.add_argument("--weight-decays", default=",".join(f"{wd:g}" for wd in WEIGHT_DECAYS),
                   help="comma-separated probe weight decays (default: evaluation's grid)")
    p.add_argument("--recalibrate-batchnorm", action="store_true",
                   help="recompute BatchNorm statistics over the unaugmented training images first")
    a = p.parse_args()
    grid = tuple(float(wd) for wd in a.weight_decays.split(","))
    for run in a.runs:
        print(run, json.dumps(score_on_validation(Path(run), grid, a.recalibrate_batchnorm)), flush=True)


if __name__ == "__main__":
    main()
