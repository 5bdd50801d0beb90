"""The run configuration: one typed dataclass, read from defaults < TOML file < command line, validated once.

Every run directory stores the full resolved config as `config.json`, so a run can be repeated
from it (`fashionssl pretrain --config run/config.toml` takes the same keys).
"""

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UserError

PRECISIONS = ("auto", "fp32", "bf16")

# The peak lr of a method not told otherwise: AdamW 2e-3 at batch 512, or the method's own, chosen at
# the main job's recipe on the validation split. SimCLR's by benchmarks/sweeps/recipe.toml (4e-3:
# +0.33 points of probe over 2e-3 on cnn-bn-wide, the mean of 3 seeds, each positive); the others'
# by benchmarks/sweeps/methods.toml, the same search for each (its trial table: docs/benchmarks.md,
# "Each method's lr, searched alike on validation"), then again at the default encoder,
# cnn-bn-wide-4x4, by benchmarks/sweeps/methods-4x4.toml ("Each method's lr at `cnn-bn-wide-4x4`"),
# where BYOL moved to 4e-3 (+0.46 points of validation probe over 2e-3), SwAV to 4e-3 (+0.90 over 8e-3)
# and VICReg to 4e-3 (+0.10 over 2e-3, within one seed's noise: the rule is the best trial wins).
# 2e-3 stayed the best for the rest.
DEFAULT_LR = 2e-3
METHOD_LR = {"simclr": 4e-3, "rotation": 8e-3, "simsiam": 1e-3, "byol": 4e-3, "swav": 4e-3, "vicreg": 4e-3}


@dataclass
class Config:
    # what to train
    method: str = "simclr"
    encoder: str = "cnn-bn-wide-4x4"  # chosen on the validation split, docs/benchmarks.md "The loss, milder crops and the idle minutes"
    method_options: dict[str, Any] = field(default_factory=dict)  # e.g. {temperature = 0.2}
    augment: str = "default"  # augmentation preset: default | seed | none
    augment_options: dict[str, Any] = field(default_factory=dict)  # per-field overrides of the preset
    # how to train
    epochs: int = 10  # more buys kNN, not the probe (docs/benchmarks.md "Ten or twenty epochs, three seeds")
    batch_size: int = 512
    optimizer: str = "adamw"  # adamw | sgd | lars
    lr: float | None = None  # peak learning rate, reached after warm-up; None: the method's (METHOD_LR)
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    final_lr: float = 0.0
    precision: str = "auto"  # auto = bf16 autocast where the hardware runs it natively, else fp32
    channels_last: bool = True  # NHWC convolutions: measured 1.3-1.5x faster on CPU
    compile: bool = False  # torch.compile the model (slow first step, faster after)
    sync_batchnorm: bool | None = None  # global-batch BatchNorm with torchrun; None: as the method needs (docs/distributed.md)
    # where and with what
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    seed: int = 0
    data: str | None = None  # IDX folder, .npz file, image folder or unlabelled image folder; default Fashion-MNIST
    data_dir: str | None = None  # the older way to name an IDX folder (--data-dir)
    val_size: int | None = None  # validation images carved from training; default 10%, at most 5000
    train_subset: int | None = None  # keep only the first N training images (quick trials)
    out: str | None = None  # run directory; default runs/<method>-<encoder>-<time>
    # monitoring and evaluation
    knn_every: int = 1  # epochs between kNN checks on the validation split (0 = never)
    knn_bank_size: int = 10000  # training images in the kNN monitor's memory bank
    log_every: int = 10  # steps between metric lines
    eval_batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.lr is None:  # resolved here, so that config.json records the lr the run used
            self.lr = METHOD_LR.get(self.method, DEFAULT_LR) if isinstance(self.method, str) else DEFAULT_LR


def _expected_types(annotation: Any) -> tuple[type, ...]:
    """The Python types a field annotation admits: `float` takes ints too, `dict[...]` any dict."""
    if typing.get_origin(annotation) is types.UnionType:
        return tuple(t for arg in typing.get_args(annotation) for t in _expected_types(arg))
    if typing.get_origin(annotation) is not None:
        return (typing.get_origin(annotation),)
    return (int, float) if annotation is float else (annotation,)


FIELDS = {f.name: f for f in dataclasses.fields(Config)}


def check_value(where: str, key: str, value: Any, expected: tuple[type, ...]) -> None:
    """Raise a UserError unless `value` has one of the `expected` types (bool is not a number here)."""
    if isinstance(value, bool) and bool not in expected:
        ok = False
    else:
        ok = isinstance(value, expected)
    if not ok:
        names = " or ".join("none" if t is type(None) else t.__name__ for t in expected)
        raise UserError(f"{where}: {key} must be {names}, got {value!r}")


def validate(cfg: Config, where: str = "config") -> Config:
    """Type and range checks for every field; returns cfg for chaining."""
    for name, f in FIELDS.items():
        value = getattr(cfg, name)
        check_value(where, name, value, _expected_types(f.type))
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{where}: {name} must be a finite number, got {value}")
    if cfg.precision not in PRECISIONS:
        raise UserError(f"{where}: precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    positive = ["epochs", "batch_size", "eval_batch_size", "log_every", "knn_bank_size"]
    for name in positive:
        if getattr(cfg, name) < 1:
            raise UserError(f"{where}: {name} must be >= 1, got {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise UserError(f"{where}: lr must be > 0, got {cfg.lr}")
    non_negative = ["weight_decay", "warmup_epochs", "final_lr", "knn_every", "val_size"]
    for name in non_negative:
        if getattr(cfg, name) is not None and getattr(cfg, name) < 0:
            raise UserError(f"{where}: {name} must be >= 0, got {getattr(cfg, name)}")
    if cfg.warmup_epochs > cfg.epochs:
        raise UserError(f"{where}: warmup_epochs ({cfg.warmup_epochs}) exceeds epochs ({cfg.epochs})")
    if cfg.train_subset is not None and cfg.train_subset < 1:
        raise UserError(f"{where}: train_subset must be >= 1, got {cfg.train_subset}")
    if cfg.data is not None and cfg.data_dir is not None:
        raise UserError(f"{where}: data and data_dir both given; keep data (it reads IDX folders too)")
    return cfg


def load_toml(path: str | Path, extra_keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a TOML config file; unknown keys are errors (a typo must not silently use a default).
    `extra_keys` are allowed besides the Config fields (the bench file's own tables)."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as e:
        raise UserError(f"cannot read config file {path}: {e.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid TOML: {e}") from None
    unknown = sorted(set(data) - set(FIELDS) - set(extra_keys))
    if unknown:
        raise UserError(f"{path}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join([*extra_keys, *FIELDS])}")
    return data


def make_config(file: str | Path | None = None, **overrides: Any) -> Config:
    """Defaults, then the TOML file's values, then `overrides` (command-line flags; None = not given)."""
    values: dict[str, Any] = load_toml(file) if file else {}
    where = str(file) if file else "config"
    for key, value in overrides.items():
        if key not in FIELDS:
            raise UserError(f"unknown config key {key!r}; valid keys: {', '.join(FIELDS)}")
        if value is None:
            continue
        if isinstance(value, dict) and key in values:  # option tables merge key by key
            check_value(where, key, values[key], (dict,))
            value = {**values[key], **value}
        values[key] = value
    return validate(Config(**values), where)


# Method options that came in with a default other than what earlier runs trained with. Runs record
# every option since 2026-12-04, so a saved config of this method that does not name one is older
# than the option and gets the value it trained with, not today's default: SimCLR's E-SSL rotation
# prediction is on by default since 2026-12-07 (docs/benchmarks.md, "SimCLR with rotation prediction").
# SwAV's rotation_weight came in at 0, what its earlier runs trained with: filled in all the same, so
# that old and new SwAV records compare alike (seed_table pairs them).
OPTIONS_OF_OLDER_RUNS = {"simclr": {"rotation_weight": 0.0}, "swav": {"rotation_weight": 0.0}}


def with_options_of_older_runs(values: dict) -> dict:
    """Saved config values with OPTIONS_OF_OLDER_RUNS filled in where the run's record lacks them."""
    older = OPTIONS_OF_OLDER_RUNS.get(values.get("method", Config.method), {})
    options = values.get("method_options", {})
    if not older or not isinstance(options, dict):
        return values
    return {**values, "method_options": {**older, **options}}


def config_from_dict(values: Any, where: str) -> Config:
    """A validated Config from saved values (a checkpoint's or config.json's); keys this version
    does not know are errors, as in a TOML file, rather than a TypeError deep inside."""
    if not isinstance(values, dict):
        raise UserError(f"{where}: the saved config is a {type(values).__name__}, not a table of options")
    unknown = sorted(set(values) - set(FIELDS))
    if unknown:
        raise UserError(f"{where}: unknown config key(s) {', '.join(unknown)} (written by another version of fashionssl?)")
    return validate(Config(**with_options_of_older_runs(values)), where)


def parse_option(text: str) -> tuple[str, Any]:
    """'key=value' from the command line, the value read as a TOML value when it parses as one
    (numbers, booleans, [lists]), else as a plain string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UserError(f"option {text!r} must look like key=value, e.g. temperature=0.1")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value
