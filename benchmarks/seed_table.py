"""One comparison's seeds gathered from wherever their runs lie, in the bench's tables.

A comparison grows over sessions: seed 0 in one bench, seeds 1 and 2 in another, a method at a new lr
in a sweep's trial. Given run directories, or folders holding them (searched for `results.json`; a run
not yet evaluated on the test split has none and is not read), this prints each run's test numbers by
seed, each method's mean ± std over its seeds, and its paired difference from SimCLR at the seeds both
have (95% t-interval), as `fashionssl bench --seeds` prints them for one bench directory. The
baselines of every `baselines.json` found come first.

Runs of one method whose recipes differ are kept apart, named by what differs (`swav (lr 0.008)`);
what only monitors training (the kNN monitor, logging, the output folder) is no difference. A seed
found twice for one recipe is refused rather than averaged in.

    .venv/bin/python benchmarks/seed_table.py runs/bench-4x4 runs/bench-4x4-seeds runs/bench-4x4-simclr
"""

import argparse
import json
from pathlib import Path
from typing import Any

from fashionssl.bench import epoch_stats, paired_table, rows_by_name, row_name, seeds_table
from fashionssl.errors import UserError
from fashionssl.train import recorded_config

# Settings that change how a run is watched or where it is kept, not what it learns.
NOT_RECIPE = {"seed", "out", "knn_every", "knn_bank_size", "log_every", "eval_batch_size"}


def as_text(value: Any) -> str:
    """`value` as JSON text with every whole number written alike, so `--opt rotation_weight=0` and a
    config's 0.0 (or a crop scale's 1 and 1.0) name the same recipe."""
    def whole(v: Any) -> Any:
        if isinstance(v, list):
            return [whole(item) for item in v]
        return int(v) if isinstance(v, float) and v.is_integer() else v
    return json.dumps(whole(value))


def recipe(config: dict) -> dict[str, Any]:
    """A run's config.json flattened (`method_options.temperature`), each value as JSON text (lists
    become comparable, `as_text`), what is not recipe left out."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{name}": as_text(option) for name, option in value.items()})
        elif key not in NOT_RECIPE:
            flat[key] = as_text(value)
    return flat


def method_rows(folders: list[Path]) -> list[dict]:
    """One row per evaluated run under `folders`: its results, seed and timing, named by its method
    and, where one method's runs differ in recipe, by the settings that differ."""
    runs = sorted({path.parent for folder in folders for path in folder.rglob("results.json")})
    # recorded_config: a run older than an option reads as what it trained with (SimCLR alone's
    # rotation_weight 0), so it pairs with later runs of that recipe instead of splitting from them.
    found = [(run, recorded_config(run / "config.json"), json.loads((run / "results.json").read_text()))
             for run in runs]
    recipes = {run: recipe(config) for run, config, _ in found}
    by_method: dict[str, list[dict]] = {}
    for run, config, _ in found:
        by_method.setdefault(config["method"], []).append(recipes[run])
    differing = {method: sorted(key for key in set().union(*group) if len({r.get(key) for r in group}) > 1)
                 for method, group in by_method.items()}
    rows, seen = [], {}
    for run, config, results in found:
        named = [f"{key} {recipes[run].get(key)}" for key in differing[config["method"]]]
        name = config["method"] + (f" ({', '.join(named)})" if named else "")
        if (name, config["seed"]) in seen:
            raise UserError(f"{run} and {seen[name, config['seed']]} are both {name} at seed {config['seed']}; "
                            "pass only one of them")
        seen[name, config["seed"]] = run
        rows.append({**results, "name": name, "seed": config["seed"], "run_dir": str(run), **epoch_stats(run)})
    return sorted(rows, key=lambda r: (r["name"], r["seed"]))


def recorded_baseline_rows(folders: list[Path]) -> list[dict]:
    """The raw-pixel and untrained-encoder rows of every baselines.json under `folders`, each (name,
    seed) once."""
    rows, seen = [], set()
    for path in sorted(p for folder in folders for p in folder.rglob("baselines.json")):
        for entry in json.loads(path.read_text()):
            for row in entry["rows"]:
                if (row["name"], row.get("seed")) not in seen:
                    seen.add((row["name"], row.get("seed")))
                    rows.append(row)
    return rows


def per_seed_table(rows: list[dict]) -> str:
    """Markdown: each run's probe on test / probe on validation / kNN on test, one column per seed."""
    groups = rows_by_name(rows)
    seeds = sorted({r["seed"] for r in rows if "seed" in r})
    lines = ["| features | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---|" * len(seeds)]
    for group in groups.values():
        by_seed = {r.get("seed", seeds[0]): r for r in group}  # raw pixels: no seed, measured once
        cells = [" / ".join(f"{100 * by_seed[s][key]:.2f}" for key in ("linear_probe_test_acc", "linear_probe_val_acc",
                                                                        "knn_test_acc"))
                 if s in by_seed else "" for s in seeds]
        lines.append(f"| {row_name(group[0], with_seed=False)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="run directories, or folders holding them")
    folders = p.parse_args().folders
    if missing := [str(f) for f in folders if not f.is_dir()]:
        p.error(f"no such folder: {', '.join(missing)}")
    try:
        methods = method_rows(folders)
    except UserError as e:
        p.error(str(e))
    rows = recorded_baseline_rows(folders) + methods
    print("Probe test / probe validation / kNN test (%):\n\n" + per_seed_table(rows))
    print("\n" + seeds_table(rows))
    simclr_seeds = {r["seed"] for r in methods if r["name"] == "simclr"}
    paired = [r for r in methods if r["seed"] in simclr_seeds]
    paired = [r for group in rows_by_name(paired).values() if len(group) > 1 for r in group]
    if len({r["name"] for r in paired}) > 1 and "simclr" in {r["name"] for r in paired}:
        print("\nPaired differences against SimCLR (same seeds):\n\n" + paired_table(paired))


if __name__ == "__main__":
    main()
