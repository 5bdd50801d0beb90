"""Compare methods at one budget: the same data, augmentation, encoder, epochs and evaluation for
each, beside the baselines every method has to beat (raw pixels and the untrained encoder, through
the same probe). Writes `comparison.md` and `comparison.json`; this is how docs/benchmarks.md's
method table is made.

A bench directory is resumable: a method whose run already holds `results.json` is read back, an
interrupted one continues from its last epoch checkpoint, so a long comparison survives a kill; the
baselines are kept in `baselines.json`.
With label fractions (`--label-fractions`), each method's encoder is also judged on subsets of the
labels (label_efficiency.py) and a second table compares them; a finished run whose results lack
those numbers is evaluated again, not retrained.
"""

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
from .runlog import epoch_lines, write_json
from .train import pretrain

# What the comparison runs unless told otherwise: every method, 10 epochs of the main job's recipe
# (Config's defaults); the kNN monitor is off to save time.
DEFAULT_BUDGET = {"epochs": 10, "knn_every": 0}


def load_bench_file(path: str | Path) -> tuple[list[str] | None, dict[str, Any], dict[str, dict[str, Any]]]:
    """A bench TOML file: optional `methods = [...]`, config keys shared by every method at the top
    level, and per-method overrides in `[per_method.NAME]` tables (e.g. a method's own options)."""
    path = Path(path)
    data = load_toml(path, extra_keys=("methods", "per_method"))
    methods = data.pop("methods", None)
    per_method = data.pop("per_method", {})
    for name, overrides in per_method.items():
        if name not in METHODS:
            raise UserError(f"{path}: [per_method.{name}]: unknown method; choose from {', '.join(METHODS)}")
        if not isinstance(overrides, dict):
            raise UserError(f"{path}: per_method.{name} must be a table of config keys")
    return methods, data, per_method


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
            and (not settings.finetune or all("finetune_test_acc" in row for row in rows.values())))


def run_method(method: str, run_dir: Path, overrides: dict[str, Any],
               label_fractions: LabelFractions | None = None) -> dict:
    """Pretrain and evaluate one method into `run_dir`, reusing whatever a previous bench left there."""
    results_path = run_dir / "results.json"
    evaluated = results_path.exists()
    if not evaluated:
        if (run_dir / "checkpoint.pt").exists():
            pretrain(resume=run_dir)
        else:
            pretrain(make_config(None, **{**overrides, "method": method, "out": str(run_dir)}))
    if not evaluated or (label_fractions and not has_label_fractions(json.loads(results_path.read_text()),
                                                                     label_fractions)):
        evaluate_checkpoint(run_dir, label_fractions=label_fractions)
    results = json.loads(results_path.read_text())
    return {"name": method, "run_dir": str(run_dir), **results, **epoch_stats(run_dir)}


def baseline_rows(cfg: Config) -> list[dict]:
    """Raw pixels and the untrained encoder (initialised by `cfg.seed`), through the same probe and kNN."""
    data = load_dataset(cfg.data, cfg.val_size, data_dir=cfg.data_dir)
    reason = unevaluable(data)
    if reason is not None:
        raise UserError(f"bench compares methods by accuracy, and {reason}")
    aug = make_augment_config("default", data.info)
    pixels = [(normalize(s.images, aug).flatten(1), s.labels) for s in (data.train, data.val, data.test)]
    start = time.perf_counter()
    raw = {"name": f"raw pixels ({pixels[0][0].shape[1]}-d)", **evaluate_features(*pixels),
           "eval_seconds": time.perf_counter() - start}
    torch.manual_seed(cfg.seed)
    untrained = evaluate_backbone(build_encoder(cfg.encoder, data.info.channels, data.info.size), data, aug,
                                  resolve_device(cfg.device))
    return [raw, {"name": f"untrained {cfg.encoder} (seed {cfg.seed})", **untrained}]


# What the baseline rows depend on: a bench directory keeps them for these settings.
BASELINE_SETTINGS = ("data", "data_dir", "val_size", "encoder", "seed")


def saved_baseline_rows(out: Path, cfg: Config) -> list[dict]:
    """`baseline_rows(cfg)`, kept in `out/baselines.json`: a rerun that adds a method or label
    fractions reads them back instead of probing again (raw pixels and untrained cnn-bn-wide: about
    3 minutes on Fashion-MNIST, 2 AMD cores). Other settings compute them afresh."""
    path, settings = out / "baselines.json", {key: getattr(cfg, key) for key in BASELINE_SETTINGS}
    try:
        saved = json.loads(path.read_text())
        if saved["settings"] == settings:
            return saved["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: computed again
    rows = baseline_rows(cfg)
    write_json(path, {"settings": settings, "rows": rows})
    return rows


def row_name(row: dict) -> str:
    """A table row's name, with how the method uses labels when it does."""
    return row["name"] + (f" ({row.get('label_use', 'uses labels')})" if row.get("uses_labels") else "")


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


def label_efficiency_table(rows: list[dict]) -> str:
    """Markdown: test accuracy of each method's classifiers at each label fraction; the from-scratch
    baseline gets one row of its own where every method's is the same (same architecture and seed)."""
    measured = [r for r in rows if "label_fractions" in r]
    fractions = list(measured[0]["label_fractions"])
    cell = lambda row, key: f"{100 * row[key]:.2f}%" if key in row else ""  # noqa: E731
    lines = ["| encoder | classifier | " + " | ".join(f"{float(f):.0%} labels" for f in fractions) + " |",
             "|---|---|" + "---:|" * len(fractions)]
    one_scratch = same_scratch_baseline([r["label_fractions"] for r in measured])
    for r in measured:
        name = row_name(r)
        for key, label in LABEL_EFFICIENCY_CLASSIFIERS:
            if key == "scratch" and one_scratch:
                continue
            values = [cell(r["label_fractions"][f], f"{key}_test_acc") for f in fractions]
            if any(values):
                lines.append(f"| {name} | {label} | " + " | ".join(values) + " |")
    if one_scratch:
        values = [cell(measured[0]["label_fractions"][f], "scratch_test_acc") for f in fractions]
        lines.append(f"| {measured[0]['encoder']}, random init | from scratch | " + " | ".join(values) + " |")
    return "\n".join(lines)


def bench_plan(bench_file: str | Path | None = None, methods: list[str] | None = None,
               overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, dict[str, Any]], dict[str, Config]]:
    """(the shared budget, the per-method overrides, {method: its config}) of a bench, every method's
    config checked before the first one spends an hour training. Budget: DEFAULT_BUDGET < the bench
    file's shared keys < `overrides` (command-line flags), then a method's own `[per_method.NAME]` table."""
    file_methods, shared, per_method = load_bench_file(bench_file) if bench_file else (None, {}, {})
    methods = check_methods(methods or file_methods or list(METHODS))
    common = {**DEFAULT_BUDGET, **shared, **{k: v for k, v in (overrides or {}).items() if v is not None}}
    configs = {name: make_config(None, **{**common, **per_method.get(name, {}), "method": name}) for name in methods}
    return common, per_method, configs


def bench(out: str | Path, methods: list[str] | None = None, bench_file: str | Path | None = None,
          overrides: dict[str, Any] | None = None, report: bool = True,
          label_fractions: LabelFractions | None = None) -> str:
    """Run the comparison into `out` (one run directory per method) and return the Markdown table;
    with `report`, also the HTML report comparing the runs (`out/report/report.html`); with
    `label_fractions`, also the label-efficiency table of every method.

    Budget: see `bench_plan`.
    """
    common, per_method, configs = bench_plan(bench_file, methods, overrides)
    methods = list(configs)
    reference = make_config(None, **common)
    out = Path(out)
    rows = saved_baseline_rows(out, reference)
    for name in methods:
        rows.append(run_method(name, out / name, {**common, **per_method.get(name, {})}, label_fractions))
        write_json(out / "comparison.json", {"budget": common, "per_method": per_method, "rows": rows})
    table = comparison_table(rows)
    if label_fractions:
        table += f"\n\nLabel efficiency ({label_fractions.protocol()}):\n\n{label_efficiency_table(rows)}"
    data_name = reference.data or reference.data_dir or "Fashion-MNIST"
    header = (f"{data_name} test accuracy, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads; budget: {json.dumps(common)}"
              + (f"; per method: {json.dumps(per_method)}" if per_method else ""))
    (out / "comparison.md").write_text(f"{header}\n\n{table}\n")
    if report:
        write_report([out / name for name in methods], out / "report", device=reference.device)
    return table
