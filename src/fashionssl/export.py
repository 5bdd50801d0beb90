"""A trained backbone for use outside fashionssl: weights as safetensors and embeddings as .npy,
and embeddings of new images with a run's or an export's backbone.

safetensors holds tensors only (no pickled code), so the weights load safely anywhere; the small
JSON beside them names the encoder, the images it takes and the input normalisation the features
were computed with. Embeddings are computed in fp32 (no autocast), so that `backbone(normalised
images)` in plain PyTorch reproduces them; README's "Using an exported backbone" shows how.
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from .augment import AugmentConfig
from .checkpoint import first_line, load_into
from .data import DataInfo, read_images
from .device import resolve_device
from .encoders import build_encoder
from .errors import UserError
from .evaluate import load_data_for, load_trained
from .probe import extract_features
from .runlog import write_json


def export_run(checkpoint: str | Path, out: str | Path | None = None, data: str | None = None,
               device: str | None = None, data_dir: str | None = None) -> Path:
    """Write backbone.safetensors, backbone.json and embeddings_/labels_{train,val,test}.npy to `out`
    (default: `export/` in the run directory) for the splits that hold images (labels only for
    labelled data), on `data`, Fashion-MNIST from `data_dir`, or else the data the run was trained on;
    returns the folder."""
    trained = load_trained(checkpoint)
    cfg, model = trained.config, trained.model
    out = Path(out) if out else trained.path.parent / "export"
    dev = resolve_device(device or cfg.device)
    dataset = load_data_for(trained, data, data_dir)
    aug = trained.augmentation()
    backbone = model.backbone.to(dev)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create export folder {out}: {e.strerror}") from None
    # contiguous copies: safetensors refuses views and tensors that share memory
    save_file({k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}, out / "backbone.safetensors")
    write_json(out / "backbone.json", {
        "encoder": cfg.encoder, "feature_dim": backbone.feature_dim, "method": cfg.method, "epochs": trained.epochs,
        "uses_labels": model.uses_labels, "channels": trained.info.channels, "size": trained.info.size,
        "mean": np.atleast_1d(aug.mean).tolist(), "std": np.atleast_1d(aug.std).tolist(),
        "class_names": trained.info.class_names,
        "input": "uint8 images (N, channels, size, size) -> float, per channel: (x / 255 - mean) / std",
        "data": dataclasses.asdict(trained.info), "checkpoint": str(trained.path),
    })
    for name in tqdm(("train", "val", "test"), desc="embeddings", disable=None):
        split = getattr(dataset, name)
        if not len(split):
            continue
        features = extract_features(backbone, split.images, aug, dev, cfg.eval_batch_size)
        np.save(out / f"embeddings_{name}.npy", features.cpu().numpy())
        if split.labels is not None:
            np.save(out / f"labels_{name}.npy", split.labels.numpy().astype(np.int64))
    return out


def load_export(export_dir: Path) -> tuple[nn.Module, DataInfo, AugmentConfig]:
    """(backbone, the images it takes, its input normalisation) of an `export_run` folder."""
    try:
        info = json.loads((export_dir / "backbone.json").read_text())
        data = DataInfo.from_dict(info["data"])
        backbone = build_encoder(info["encoder"], data.channels, data.size)
        normalisation = AugmentConfig(mean=info["mean"], std=info["std"], size=data.size)
        weights = load_file(export_dir / "backbone.safetensors")
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as e:
        raise UserError(f"{export_dir}: not a readable export of this fashionssl version ({first_line(e)}); "
                        "export the run again with `fashionssl export RUN_DIR`") from None
    load_into(backbone, weights, export_dir / "backbone.safetensors", f"encoder {info['encoder']!r}")
    return backbone, data, normalisation


def embed(model_dir: str | Path, images: str | Path, out: str | Path, device: str | None = None,
          batch_size: int = 1024) -> Path:
    """Embeddings (N, feature_dim) float32 of the images at `images` (see `data.read_images`), by
    the backbone of a run directory (or checkpoint) or of an export folder, with the normalisation
    it was trained with; written to `out` as .npy, one row per image in reading order."""
    model_dir = Path(model_dir)
    if (model_dir / "backbone.json").is_file():
        backbone, info, normalisation = load_export(model_dir)
    else:
        trained = load_trained(model_dir)
        backbone, info, normalisation = trained.model.backbone, trained.info, trained.augmentation()
    pixels = read_images(images)
    _, channels, size, _ = pixels.shape
    if (channels, size) != (info.channels, info.size):
        raise UserError(f"{images}: {channels}-channel {size}x{size} images, but {model_dir} takes {info.channels}-"
                        f"channel {info.size}x{info.size} ones; convert or resize them first")
    dev = resolve_device(device or "auto")
    features = extract_features(backbone.to(dev), pixels, normalisation, dev, batch_size).cpu().numpy()
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("wb") as f:  # (np.save given a name would add .npy to it)
            np.save(f, features)
    except OSError as e:
        raise UserError(f"cannot write {out}: {e.strerror}") from None
    return out
