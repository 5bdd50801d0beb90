"""The config, bench and sweep files that docs/benchmarks.md cites load and validate: a typo or a
stale key in one would otherwise surface only after someone had started an hour-long re-run."""

from __future__ import annotations

from pathlib import Path

import pytest

from fashionssl import augment
from fashionssl.bench import bench_plan
from fashionssl.config import Config, make_config

ROOT = Path(__file__).resolve().parents[1]


def check(cfg: Config) -> None:
    """Config fields are checked by make_config; the augmentation's overrides by its own maker."""
    augment.make_config(cfg.augment, **cfg.augment_options)


BENCH_FILES = ["bench.toml", "bench-20.toml", "bench-4x4.toml", "bench-cnn-bn.toml", "shapes.toml"]  # `fashionssl bench --config`
RUN_CONFIGS = ["long.toml"]  # `fashionssl run --config`


def test_every_shipped_config_is_checked_below():
    assert sorted(p.name for p in (ROOT / "configs").glob("*.toml")) == sorted(BENCH_FILES + RUN_CONFIGS)


@pytest.mark.parametrize("name", BENCH_FILES)
def test_bench_files_validate_for_each_of_their_methods(name):
    *_, configs = bench_plan(ROOT / "configs" / name)
    for config in configs.values():
        check(config)


@pytest.mark.parametrize("name", RUN_CONFIGS)
def test_run_configs_validate(name):
    check(make_config(ROOT / "configs" / name))


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks" / "sweeps").glob("*.toml")), ids=lambda p: p.name)
def test_every_sweep_trial_validates(path, benchmark_script):
    _, trials = benchmark_script("sweep").load_sweep(path)  # checks every trial's config and augmentation
    assert trials


@pytest.mark.parametrize("text, says", [
    ('[trials]\ntemperature-0.1 = {method_options = {temperature = 0.1}}\n', "'temperature-0.1' is not a table"),
    ('[trials]\nshort = {epoch = 3}\n', "trial 'short': unknown config key 'epoch'"),
])
def test_a_bad_sweep_trial_is_named_without_a_traceback(text, says, tmp_path, benchmark_script):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exit:
        benchmark_script("sweep").load_sweep(path)
    assert says in str(exit.value)


def test_a_bench_files_pinned_option_keeps_the_command_lines_options_beside_it():
    """configs/bench-4x4.toml pins SimCLR's rotation_weight; --opt loss=decoupled must still apply."""
    *_, configs = bench_plan(ROOT / "configs" / "bench-4x4.toml", ["simclr"], {"method_options": {"loss": "decoupled"}})
    assert configs["simclr"].method_options == {"loss": "decoupled", "rotation_weight": 0.0}
