"""Compare methods at one budget: the same data, augmentation, encoder, epochs and evaluation for
each, beside the baselines every method has to beat (raw pixels and the untrained encoder, through
the same probe). Writes `comparison.md` and `comparison.json`; this is how docs/benchmarks.md's
method table is made.

A bench directory is resumable: a method whose run already holds `results.json` is read back, an
interrupted one continues from its last epoch checkpoint, so a long comparison survives a kill; the
baselines are kept in `baselines.json`. A run recorded with other settings than the bench now asks
for (the bench file's lr changed since, say) is refused in one line, never read back as this one.
With seeds (`--seeds 0,1,2`), every method is trained once per seed into METHOD/seed-S, and the table
gives each method's mean ± std over its seeds, and whether its paired difference from SimCLR (same
seeds) is real rather than the seed's doing.
With label fractions (`--label-fractions`), each method's encoder is also judged on subsets of the
labels (label_efficiency.py) and a second table compares them; a finished run whose results lack
those numbers is evaluated again, not retrained.
"""

import dataclasses
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from .augment import make_config as make_augment_config, normalize
from .config import Config, load_toml, make_config
from .data import load_dataset
from .device import resolve_device
from .encoders import build_encoder
from .errors import UserError
from .evaluate import evaluate_backbone, evaluate_checkpoint, unevaluable
from .label_efficiency import LABEL_EFFICIENCY_CLASSIFIERS, LabelFractions, same_scratch_baseline
from .methods import METHODS
from .probe import evaluate_features
from .report import write_report
from .seed_statistics import mean_std, paired_difference
from .runlog import epoch_lines, write_json
from .train import check_same_recipe, pretrain

# What the comparison runs unless told otherwise: every method, 10 epochs of the main job's recipe
# (Config's defaults); the kNN monitor is off to save time.
DEFAULT_BUDGET = {"epochs": 10, "knn_every": 0}


def check_seeds(seeds: Any, where: str) -> list[int]:
    """`seeds` as given: at least one, integers, each once (a repeated seed would pair a run with itself)."""
    if not (isinstance(seeds, list) and seeds and all(type(s) is int for s in seeds) and len(set(seeds)) == len(seeds)):
        raise UserError(f"{where}: seeds must be distinct integers, at least one, e.g. [0, 1, 2]; got {seeds!r}")
    return seeds


def parse_seeds(text: str) -> list[int]:
    """'0,1,2' (--seeds) -> [0, 1, 2], checked by `check_seeds`."""
    try:
        seeds = [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds {text!r}: give comma-separated integers, e.g. --seeds 0,1,2") from None
    return check_seeds(seeds, "--seeds")


def load_bench_file(path: str | Path) -> tuple[list[str] | None, list[int] | None, dict[str, Any], dict[str, dict[str, Any]]]:
    """A bench TOML file: optional `methods = [...]` and `seeds = [...]`, config keys shared by every
    method at the top level, and per-method overrides in `[per_method.NAME]` tables (e.g. a method's
    own options)."""
    path = Path(path)
    data = load_toml(path, extra_keys=("methods", "seeds", "per_method"))
    methods = data.pop("methods", None)
    seeds = data.pop("seeds", None)
    if seeds is not None:
        check_seeds(seeds, str(path))
    per_method = data.pop("per_method", {})
    for name, overrides in per_method.items():
        if name not in METHODS:
            raise UserError(f"{path}: [per_method.{name}]: unknown method; choose from {', '.join(METHODS)}")
        if not isinstance(overrides, dict):
            raise UserError(f"{path}: per_method.{name} must be a table of config keys")
    return methods, seeds, data, per_method


def check_methods(methods: list[str]) -> list[str]:
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise UserError(f"unknown method(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(METHODS)}")
    return methods


def epoch_stats(run_dir: Path) -> dict[str, float]:
    """Pretraining time and speed from metrics.jsonl: the sum of epoch times, and the median epoch
    (the quiet cost when the machine was shared for a while)."""
    epochs = epoch_lines(run_dir)
    seconds = [line["epoch_seconds"] for line in epochs]
    return {"pretrain_seconds": sum(seconds), "median_epoch_seconds": statistics.median(seconds),
            "images_per_s": statistics.median(line["epoch_images_per_s"] for line in epochs)}


def has_label_fractions(results: dict, settings: LabelFractions) -> bool:
    """Whether `results` already hold the label-efficiency numbers `settings` asks for."""
    rows = results.get("label_fractions", {})
    return (results.get("label_fractions_protocol") == settings.protocol()
            and set(rows) == {f"{f:g}" for f in settings.fractions}
            and (not settings.finetune or all("finetune_test_acc" in row for row in rows.values()))
            and (not settings.fixmatch or all("fixmatch_test_acc" in row for row in rows.values())))


def run_method(method: str, run_dir: Path, overrides: dict[str, Any],
               label_fractions: LabelFractions | None = None) -> dict:
    """Pretrain and evaluate one method into `run_dir`, reusing whatever a previous bench left there."""
    results_path = run_dir / "results.json"
    evaluated = results_path.exists()
    cfg = make_config(None, **{**overrides, "method": method, "out": str(run_dir)})
    check_same_recipe(cfg, run_dir)
    if not evaluated:
        if (run_dir / "checkpoint.pt").exists():
            pretrain(resume=run_dir)
        else:
            pretrain(cfg)
    if not evaluated or (label_fractions and not has_label_fractions(json.loads(results_path.read_text()),
                                                                     label_fractions)):
        evaluate_checkpoint(run_dir, label_fractions=label_fractions)
    results = json.loads(results_path.read_text())
    return {"name": method, "run_dir": str(run_dir), **results, **epoch_stats(run_dir)}


def baseline_rows(cfg: Config, raw_pixels: bool = True) -> list[dict]:
    """Raw pixels (they do not depend on the seed: a bench over seeds needs them once) and the
    untrained encoder (initialised by `cfg.seed`), through the same probe and kNN."""
    data = load_dataset(cfg.data, cfg.val_size, data_dir=cfg.data_dir)
    reason = unevaluable(data)
    if reason is not None:
        raise UserError(f"bench compares methods by accuracy, and {reason}")
    aug = make_augment_config("default", data.info)
    rows = []
    if raw_pixels:
        pixels = [(normalize(s.images, aug).flatten(1), s.labels) for s in (data.train, data.val, data.test)]
        start = time.perf_counter()
        rows.append({"name": f"raw pixels ({pixels[0][0].shape[1]}-d)", **evaluate_features(*pixels),
                     "eval_seconds": time.perf_counter() - start})
    torch.manual_seed(cfg.seed)
    untrained = evaluate_backbone(build_encoder(cfg.encoder, data.info.channels, data.info.size), data, aug,
                                  resolve_device(cfg.device))
    return [*rows, {"name": f"untrained {cfg.encoder}", "seed": cfg.seed, **untrained}]


# What the baseline rows depend on: a bench directory keeps them for these settings.
BASELINE_SETTINGS = ("data", "data_dir", "val_size", "encoder", "seed")


def saved_baseline_rows(out: Path, cfg: Config, raw_pixels: bool = True) -> list[dict]:
    """`baseline_rows(cfg, raw_pixels)`, kept in `out/baselines.json` with one entry per settings (a
    bench over seeds keeps each seed's): a rerun that adds a method or label fractions reads them back
    instead of probing again (raw pixels and untrained cnn-bn-wide: about 3 minutes on Fashion-MNIST,
    2 AMD cores). Other settings compute them afresh."""
    path = out / "baselines.json"
    settings = {**{key: getattr(cfg, key) for key in BASELINE_SETTINGS}, "raw_pixels": raw_pixels}
    try:
        entries = json.loads(path.read_text())
        rows = next((entry["rows"] for entry in entries if entry["settings"] == settings), None)
    except (OSError, ValueError, KeyError, TypeError):
        entries, rows = [], None  # none yet, unreadable, or an earlier version's single entry: computed again
    if rows is None:
        rows = baseline_rows(cfg, raw_pixels)
        write_json(path, [*entries, {"settings": settings, "rows": rows}])
    return rows


def row_name(row: dict, with_seed: bool = True) -> str:
    """A table row's name, with its seed where the table shows one row per run, and how the method
    uses labels when it does."""
    seed = f" (seed {row['seed']})" if with_seed and "seed" in row else ""
    return row["name"] + seed + (f" ({row.get('label_use', 'uses labels')})" if row.get("uses_labels") else "")


def comparison_table(rows: list[dict]) -> str:
    """Markdown: one row per baseline or method; methods that learn from labels say so."""
    lines = ["| features | linear probe | kNN k=200 | zero-shot | pretraining | median epoch | images/s | evaluation |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        name = row_name(r)
        zero_shot = f"{100 * r['zero_shot_test_acc']:.2f}%" if "zero_shot_test_acc" in r else ""
        pretrain_time = f"{r['pretrain_seconds'] / 60:.1f} min" if "pretrain_seconds" in r else ""
        epoch = f"{r['median_epoch_seconds']:.1f} s" if "median_epoch_seconds" in r else ""
        speed = f"{r['images_per_s']:,.0f}" if "images_per_s" in r else ""
        lines.append(f"| {name} | {100 * r['linear_probe_test_acc']:.2f}% | {100 * r['knn_test_acc']:.2f}% | "
                     f"{zero_shot} | {pretrain_time} | {epoch} | {speed} | {r['eval_seconds']:.0f} s |")
    return "\n".join(lines)


def verdict(low: float, high: float) -> str:
    """Plain words for an interval of (method - SimCLR): a difference is real only when the interval
    excludes 0."""
    return "beats SimCLR" if low > 0 else "loses to SimCLR" if high < 0 else "no detectable difference"


def rows_by_name(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of each baseline or method (one per seed), in the order they first appear."""
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(row["name"], []).append(row)
    return groups


def percent(values: list[float]) -> str:
    """'90.12 ± 0.31%' (mean ± sample std), or '90.12%' for a single value."""
    mean, std = mean_std(values)
    return f"{100 * mean:.2f}%" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}%"


def seeds_table(rows: list[dict]) -> str:
    """Markdown: one row per baseline or method, its accuracies as mean ± std over its seeds (raw
    pixels, which no seed changes, are measured once), its mean pretraining time and speed."""
    lines = ["| features | linear probe | kNN k=200 | zero-shot | pretraining | images/s | seeds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for group in rows_by_name(rows).values():
        first = group[0]
        accuracy = lambda key: percent([r[key] for r in group]) if key in first else ""  # noqa: E731
        pretrain_time = (f"{statistics.fmean(r['pretrain_seconds'] for r in group) / 60:.1f} min"
                         if "pretrain_seconds" in first else "")
        speed = f"{statistics.fmean(r['images_per_s'] for r in group):,.0f}" if "images_per_s" in first else ""
        seeds = len(group) if "seed" in first else ""
        lines.append(f"| {row_name(first, with_seed=False)} | {accuracy('linear_probe_test_acc')} | "
                     f"{accuracy('knn_test_acc')} | {accuracy('zero_shot_test_acc')} | {pretrain_time} | {speed} | "
                     f"{seeds} |")
    return "\n".join(lines)


def label_efficiency_table(rows: list[dict]) -> str:
    """Markdown: test accuracy of each method's classifiers at each label fraction, as mean ± std over
    the method's seeds (or its one value); the from-scratch baseline gets one row of its own where
    every run's is the same (same architecture and label-subset seed)."""
    measured = [r for r in rows if "label_fractions" in r]
    fractions = list(measured[0]["label_fractions"])

    def cells(group: list[dict], key: str) -> list[str]:
        by_fraction = [[r["label_fractions"][f][key] for r in group if key in r["label_fractions"][f]] for f in fractions]
        return [percent(values) if values else "" for values in by_fraction]

    lines = ["| encoder | classifier | " + " | ".join(f"{float(f):.0%} labels" for f in fractions) + " |",
             "|---|---|" + "---:|" * len(fractions)]
    one_scratch = same_scratch_baseline([r["label_fractions"] for r in measured])
    for group in rows_by_name(measured).values():
        for key, label in LABEL_EFFICIENCY_CLASSIFIERS:
            values = cells(group, f"{key}_test_acc")
            if any(values) and not (key == "scratch" and one_scratch):
                lines.append(f"| {row_name(group[0], with_seed=False)} | {label} | " + " | ".join(values) + " |")
    if one_scratch:
        lines.append(f"| {measured[0]['encoder']}, random init | from scratch | "
                     + " | ".join(cells(measured[:1], "scratch_test_acc")) + " |")
    return "\n".join(lines)


# The test accuracies every run has, as the paired table and the report name them.
MEASURES = (("linear_probe_test_acc", "linear probe"), ("knn_test_acc", "kNN"))


def accuracies_by_name(rows: list[dict]) -> dict[str, dict[str, list[float]]]:
    """{baseline or method: {measure: its test accuracy at each seed}}, what the report draws with error bars."""
    return {row_name(group[0], with_seed=False): {label: [r[key] for r in group] for key, label in MEASURES}
            for group in rows_by_name(rows).values()}


def paired_table(rows: list[dict]) -> str:
    """Markdown: each method's paired difference from SimCLR (same seed) in percentage points, its 95%
    t-interval and what it says. Needs SimCLR and two seeds or more among `rows`."""
    methods = rows_by_name([r for r in rows if "method" in r])
    simclr = {r["seed"]: r for r in methods.pop("simclr")}
    lines = ["| method | measure | difference (method − SimCLR) | 95% interval | verdict |", "|---|---|---:|---:|---|"]
    for group in methods.values():
        for key, measure in MEASURES:
            mean, low, high = paired_difference([r[key] for r in group], [simclr[r["seed"]][key] for r in group])
            lines.append(f"| {row_name(group[0], with_seed=False)} | {measure} | {100 * mean:+.2f} points | "
                         f"[{100 * low:+.2f}, {100 * high:+.2f}] | {verdict(low, high)} |")
    return "\n".join(lines)


def bench_plan(bench_file: str | Path | None = None, methods: list[str] | None = None,
               overrides: dict[str, Any] | None = None, seeds: list[int] | None = None,
               ) -> tuple[dict[str, Any], dict[str, dict[str, Any]], list[int] | None, dict[str, Config]]:
    """(the shared budget, the per-method overrides, the seeds, {method: its config}) of a bench,
    every method's config checked before the first one spends an hour training. Budget:
    DEFAULT_BUDGET < the bench file's shared keys < `overrides` (command-line flags), then a method's
    own `[per_method.NAME]` table. Seeds: `seeds` (--seeds), else the bench file's, else None (one
    run per method, with the config's `seed`)."""
    file_methods, file_seeds, shared, per_method = load_bench_file(bench_file) if bench_file else (None, None, {}, {})
    methods = check_methods(methods or file_methods or list(METHODS))
    seeds = seeds or file_seeds
    common = {**DEFAULT_BUDGET, **shared, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    if seeds and any("seed" in keys for keys in (common, *per_method.values())):
        raise UserError(f"seed and seeds both given; with seeds ({', '.join(map(str, seeds))}) each run takes its own")
    configs = {name: make_config(None, **{**method_budget(common, per_method.get(name, {})), "method": name})
               for name in methods}
    return common, per_method, seeds, configs


def method_budget(common: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """The shared budget with a method's `[per_method.NAME]` table over it. Option tables merge key
    by key, so that a method's pinned option (SimCLR's `rotation_weight` in the shipped bench files)
    keeps the `--opt` options of the command line beside it instead of replacing them."""
    tables = {key: {**common[key], **value} for key, value in own.items()
              if isinstance(value, dict) and isinstance(common.get(key), dict)}
    return {**common, **own, **tables}


def run_dir(out: Path, method: str, seed: int | None) -> Path:
    """OUT/METHOD, or OUT/METHOD/seed-S when the bench repeats each method over seeds."""
    return out / method if seed is None else out / method / f"seed-{seed}"


def bench(out: str | Path, methods: list[str] | None = None, bench_file: str | Path | None = None,
          overrides: dict[str, Any] | None = None, report: bool = True,
          label_fractions: LabelFractions | None = None, seeds: list[int] | None = None) -> str:
    """Run the comparison into `out` (one run directory per method, or per method and seed) and
    return the Markdown table; with `report`, also the HTML report comparing the runs
    (`out/report/report.html`, each method's first seed); with `label_fractions`, also the
    label-efficiency table of every run. With `seeds`, the table gives mean ± std over the seeds, and
    a second one each method's paired difference from SimCLR; comparison.json keeps every run's row.
    The runs go seed by seed, so that an interrupted bench already holds whole comparisons.

    Budget and seeds: see `bench_plan`.
    """
    common, per_method, seeds, configs = bench_plan(bench_file, methods, overrides, seeds)
    methods = list(configs)
    reference = make_config(None, **common)
    out = Path(out)
    rows, run_seeds = [], seeds or [None]  # None: one run per method, with the config's seed
    for i, seed in enumerate(run_seeds):
        cfg = reference if seed is None else dataclasses.replace(reference, seed=seed)
        rows += saved_baseline_rows(out, cfg, raw_pixels=i == 0)
    for seed in run_seeds:
        seeded = {} if seed is None else {"seed": seed}
        for name in methods:
            row = run_method(name, run_dir(out, name, seed), {**method_budget(common, per_method.get(name, {})), **seeded},
                             label_fractions)
            rows.append({**row, **seeded})
            write_json(out / "comparison.json", {"budget": common, "per_method": per_method, "rows": rows})
    if seeds is None:
        table = comparison_table(rows)
    else:
        table = seeds_table(rows)
        if len(seeds) > 1 and "simclr" in methods and len(methods) > 1:
            table += f"\n\nPaired differences against SimCLR (same seeds):\n\n{paired_table(rows)}"
    if label_fractions:
        table += f"\n\nLabel efficiency ({label_fractions.protocol()}):\n\n{label_efficiency_table(rows)}"
    data_name = reference.data or reference.data_dir or "Fashion-MNIST"
    header = (f"{data_name} test accuracy, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; budget: {json.dumps(common)}"
              + (f"; per method: {json.dumps(per_method)}" if per_method else "")
              + (f"; seeds: {', '.join(map(str, seeds))}" if seeds else ""))
    (out / "comparison.md").write_text(f"{header}\n\n{table}\n")
    if report:
        write_report([run_dir(out, name, seeds[0] if seeds else None) for name in methods], out / "report",
                     device=reference.device, over_seeds=accuracies_by_name(rows) if seeds else None)
    return table
