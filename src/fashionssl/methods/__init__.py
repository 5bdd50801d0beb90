"""Methods by name. Each is a `Method`: heads + loss + a short forward."""

import inspect

from torch import nn

from ..data import DataInfo
from ..encoders import build_encoder
from ..errors import UserError
from .barlow import BarlowTwins
from .base import Method
from .byol import BYOL
from .clip import CLIP
from .dino import DINO
from .moco import MoCo
from .rotation import Rotation
from .simclr import SimCLR
from .simsiam import SimSiam
from .supervised import Supervised
from .swav import SwAV
from .vicreg import VICReg

METHODS: dict[str, type[Method]] = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "simsiam": SimSiam,
    "rotation": Rotation,
    "supervised": Supervised,
    "swav": SwAV,
    "dino": DINO,
    "clip": CLIP,
    "barlow": BarlowTwins,
    "vicreg": VICReg,
}


def method_options(name: str) -> dict[str, object]:
    """The options a method accepts (its constructor's keyword arguments) with their defaults;
    the backbone and the class names come from the run, not from options. Tuples as lists, as
    JSON gives them back: config.json and the checkpoint's config then hold the same values."""
    params = inspect.signature(METHODS[name]).parameters
    return {k: list(p.default) if isinstance(p.default, tuple) else p.default
            for k, p in params.items() if k not in ("backbone", "class_names")}


def build_method(name: str, backbone: nn.Module, options: dict | None = None,
                 class_names: tuple[str, ...] | None = None) -> Method:
    """Method `name` on `backbone`; methods that train with labels (`uses_labels`) also get the
    data's `class_names` (None: the data has no labels, which they refuse)."""
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    options = dict(options or {})
    valid = method_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)} for method {name}; valid: {', '.join(valid) or 'none'}")
    method = METHODS[name]
    if not method.uses_labels:
        return method(backbone, **options)
    if class_names is None:
        raise UserError(f"method {name} trains with labels and the data has none; choose a self-supervised method, "
                        f"e.g. --method simclr")
    return method(backbone, class_names, **options)


def build_model(cfg, info: DataInfo) -> Method:
    """The method named by a `Config`, on a fresh encoder of the configured kind for `info`'s images."""
    backbone = build_encoder(cfg.encoder, info.channels, info.size)
    return build_method(cfg.method, backbone, cfg.method_options, info.class_names)
