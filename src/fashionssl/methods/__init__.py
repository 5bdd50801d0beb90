"""Methods by name. Each is a `Method`: heads + loss + a short forward."""

import inspect

from torch import nn

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
    """The options a method accepts (its constructor's keyword arguments) with their defaults."""
    params = inspect.signature(METHODS[name]).parameters
    return {k: p.default for k, p in params.items() if k != "backbone"}


def build_method(name: str, backbone: nn.Module, options: dict | None = None) -> Method:
    if name not in METHODS:
        raise UserError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    options = dict(options or {})
    valid = method_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)} for method {name}; valid: {', '.join(valid) or 'none'}")
    return METHODS[name](backbone, **options)


def build_model(cfg) -> Method:
    """The method named by a `Config`, on a fresh encoder of the configured kind."""
    return build_method(cfg.method, build_encoder(cfg.encoder), cfg.method_options)
