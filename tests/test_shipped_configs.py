"""The config, bench and sweep files that docs/benchmarks.md cites load and validate: a typo or a
stale key in one would otherwise surface only after someone had started an hour-long re-run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fashionssl import augment
from fashionssl.bench import DEFAULT_BUDGET, load_bench_file
from fashionssl.config import Config, make_config
from fashionssl.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


def check(cfg: Config) -> None:
    """Config fields are checked by make_config; the augmentation's overrides by its own maker."""
    augment.make_config(cfg.augment, **cfg.augment_options)


BENCH_FILES = ["bench.toml", "shapes.toml"]  # `fashionssl bench --config`
RUN_CONFIGS = ["long.toml"]  # `fashionssl run --config`


def test_every_shipped_config_is_checked_below():
    assert sorted(p.name for p in (ROOT / "configs").glob("*.toml")) == sorted(BENCH_FILES + RUN_CONFIGS)


@pytest.mark.parametrize("name", BENCH_FILES)
def test_bench_files_validate_for_each_of_their_methods(name):
    methods, shared, per_method = load_bench_file(ROOT / "configs" / name)
    for method in methods or METHODS:
        check(make_config(None, **{**DEFAULT_BUDGET, **shared, **per_method.get(method, {}), "method": method}))


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_configs_validate(name):
    check(make_config(ROOT / "configs" / name))


def load_sweep_script():
    spec = importlib.util.spec_from_file_location("sweep", ROOT / "benchmarks" / "sweep.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_every_sweep_trial_validates(path):
    _, trials = load_sweep_script().load_sweep(path)  # checks every trial's config and augmentation
    assert trials
