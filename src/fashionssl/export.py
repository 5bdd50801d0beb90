"""A trained backbone for use outside fashionssl: weights as safetensors and embeddings as .npy.

safetensors holds tensors only (no pickled code), so the weights load safely anywhere; the small
JSON beside them names the encoder and the input normalisation the features were computed with.
Embeddings are computed in fp32 (no autocast), so that `backbone(normalised images)` in plain
PyTorch reproduces them; README's "Using an exported backbone" shows how.
"""

from pathlib import Path

import numpy as np
from safetensors.torch import save_file
from tqdm import tqdm

from .augment import make_config
from .checkpoint import resolve_checkpoint
from .data import load_fashion_mnist
from .device import resolve_device
from .errors import UserError
from .evaluate import extract_features, load_trained
from .runlog import write_json


def export_run(checkpoint: str | Path, out: str | Path | None = None, data_dir: str | None = None,
               device: str | None = None) -> Path:
    """Write backbone.safetensors, backbone.json and embeddings_/labels_{train,val,test}.npy to `out`
    (default: `export/` in the run directory); returns the folder."""
    cfg, model, epochs = load_trained(checkpoint)
    out = Path(out) if out else resolve_checkpoint(checkpoint).parent / "export"
    dev = resolve_device(device or cfg.device)
    data = load_fashion_mnist(data_dir or cfg.data_dir, cfg.val_size)
    aug = make_config(cfg.augment, **cfg.augment_options)
    backbone = model.backbone.to(dev)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create export folder {out}: {e.strerror}") from None
    # contiguous copies: safetensors refuses views and tensors that share memory
    save_file({k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}, out / "backbone.safetensors")
    write_json(out / "backbone.json", {
        "encoder": cfg.encoder, "feature_dim": backbone.feature_dim, "method": cfg.method, "epochs": epochs,
        "uses_labels": model.uses_labels, "mean": aug.mean, "std": aug.std,
        "input": "uint8 images (N, 28, 28) -> float (N, 1, 28, 28): (x / 255 - mean) / std",
        "checkpoint": str(resolve_checkpoint(checkpoint)),
    })
    for name in tqdm(("train", "val", "test"), desc="embeddings", disable=None):
        split = getattr(data, name)
        features = extract_features(backbone, split.images, aug, dev, cfg.eval_batch_size)
        np.save(out / f"embeddings_{name}.npy", features.cpu().numpy())
        np.save(out / f"labels_{name}.npy", split.labels.numpy().astype(np.int64))
    return out
