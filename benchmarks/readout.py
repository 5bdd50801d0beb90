"""Read a trained `cnn-bn-wide` or `cnn-bn-wide-4x4` run's last 7x7 map four ways and score each on the
validation split only (linear probe, best weight decay of evaluation's grid), without retraining:
max-pooled to 3x3 as `cnn-bn-wide` does (its last row and column dropped), max-pooled in ceil mode
to 4x4 (kept; what `cnn-bn-wide-4x4` reads), adaptive max-pooled to 3x3 (kept, in overlapping
windows), and not pooled at all (12544-d). With `--untrained`, the same for a freshly initialised
encoder (seed 0).

    .venv/bin/python benchmarks/readout.py runs/main-kernel --untrained
"""

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from fashionssl.device import autocast_dtype, resolve_device
from fashionssl.encoders import build_encoder
from fashionssl.evaluate import load_data_for, load_trained
from fashionssl.probe import best_weight_decay, extract_features, probe_on_validation

READOUTS = {
    "3x3 (cnn-bn-wide)": lambda m: F.relu(F.max_pool2d(m, 2)),
    "4x4, ceil mode (cnn-bn-wide-4x4)": lambda m: F.relu(F.max_pool2d(m, 2, ceil_mode=True)),
    "3x3, adaptive max": lambda m: F.relu(F.adaptive_max_pool2d(m, 3)),
    "7x7, not pooled": F.relu,
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir")
    p.add_argument("--untrained", action="store_true", help="also read an untrained encoder the same ways")
    a = p.parse_args()
    trained = load_trained(Path(a.run_dir))
    cfg = trained.config
    device = resolve_device(cfg.device)
    amp = autocast_dtype(cfg.precision, device)
    data, aug = load_data_for(trained), trained.augmentation()
    backbones = {"trained": trained.model.backbone}
    if a.untrained:
        torch.manual_seed(0)
        backbones["untrained"] = build_encoder(cfg.encoder, data.info.channels, data.info.size)
    for name, backbone in backbones.items():
        stages = backbone.features[:10].to(device)  # two stages, then the last conv and BN: the 7x7 map
        maps = [extract_features(stages, s.images, aug, device, cfg.eval_batch_size, amp) for s in (data.train, data.val)]
        for readout, pool in READOUTS.items():
            train, val = [(pool(m).flatten(1), s.labels.to(device)) for m, s in zip(maps, (data.train, data.val))]
            by_weight_decay, _ = probe_on_validation(train, val, len(data.info.class_names))
            best = best_weight_decay(by_weight_decay)
            print(f"{name} | {readout} | {train[0].shape[1]}-d | val probe {by_weight_decay[best]:.2%} (wd {best:g})",
                  flush=True)


if __name__ == "__main__":
    main()
