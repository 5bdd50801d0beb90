"""Choose a recipe on the validation split: pretrain one run per trial of a sweep file and score each
on the 5,000 validation images only (the test split is never read), so that the trials may be
compared and a default chosen without spending the test set.

    .venv/bin/python benchmarks/sweep.py benchmarks/sweeps/redundancy.toml --out runs/sweep-redundancy

A sweep file holds run config keys shared by every trial at the top level (the base, as in
`--config`) and a `[trials]` table of named trials, each a table of config keys that override the base:

    epochs = 5
    [trials]
    barlow = {method = "barlow"}
    barlow-lambda-0.02 = {method = "barlow", method_options = {lambda_offdiag = 0.02}}

Each trial trains into `OUT/<name>` and its scores go to `OUT/<name>/validation.json`: the linear
probe fitted on the training split at every weight decay of the evaluation grid, scored on
validation (the best is reported with its weight decay: the choice `fashionssl evaluate` would make),
and kNN (k=200, bank = the training split). The sweep is resumable: scored trials are read back, an
interrupted one continues from its last epoch, and a trial whose overrides changed since is refused.
The Markdown table goes to stdout and `OUT/sweep.md`.
"""

import argparse
import json
import time
from pathlib import Path

from fashionssl import augment
from fashionssl.bench import epoch_stats
from fashionssl.config import FIELDS, load_toml, make_config
from fashionssl.errors import UserError
from fashionssl.runlog import write_json
from fashionssl.train import check_same_recipe, pretrain
from validation_scores import score_on_validation


def load_sweep(path: str | Path) -> tuple[dict, dict[str, dict]]:
    """(base, {trial name: its overrides}) of a sweep file, every trial's config checked before the
    first one trains. A trial's key replaces the base's whole (an `augment_options` table included)."""
    base = load_toml(path, extra_keys=("trials",))
    trials = base.pop("trials", {})
    for name, trial in trials.items():
        if not isinstance(trial, dict):
            raise SystemExit(f"{path}: trial {name!r} is not a table of config keys")
        # `temperature-0.1 = {...}` is the key "temperature-0" holding the table "1": TOML splits bare
        # keys at dots, so such a trial holds a nested table where config keys should be.
        nested = next((key for key, value in trial.items() if key not in FIELDS and isinstance(value, dict)), None)
        if nested is not None:
            raise SystemExit(f"{path}: trial '{name}.{nested}' is not a table of config keys: a dot in a bare "
                             f"TOML key makes a nested table; quote the name (\"{name}.{nested}\" = {{...}})")
        try:
            config = make_config(None, **{**base, **trial})
            augment.make_config(config.augment, **config.augment_options)
        except UserError as e:
            raise SystemExit(f"{path}: trial {name!r}: {e}") from None
    return base, trials


def run_trial(run_dir: Path, options: dict) -> dict:
    """Pretrain (or continue) one trial and score it, reusing what an earlier sweep left in `run_dir`."""
    scores_path = run_dir / "validation.json"
    cfg = make_config(None, **options, out=str(run_dir))
    check_same_recipe(cfg, run_dir)  # a trial whose overrides changed since is refused, not read back
    if not scores_path.exists():
        if (run_dir / "config.json").exists():
            pretrain(resume=run_dir)
        else:
            pretrain(cfg)
        write_json(scores_path, score_on_validation(run_dir))
    return {**json.loads(scores_path.read_text()), **epoch_stats(run_dir)}


def sweep_table(options: dict[str, dict], scores: dict[str, dict]) -> str:
    """One Markdown row per trial: its overrides of the base, validation probe (weight decay), kNN, time."""
    lines = ["| trial | overrides | val probe (wd) | val kNN | pretraining |", "|---|---|---:|---:|---:|"]
    for name, trial in options.items():
        s = scores[name]
        lines.append(f"| {name} | {json.dumps(trial, sort_keys=True) if trial else '(base)'} | "
                     f"{100 * s['val_probe_acc']:.2f}% ({s['probe_weight_decay']:g}) | {100 * s['val_knn_acc']:.2f}% | "
                     f"{s['pretrain_seconds'] / 60:.1f} min |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("sweep_file")
    p.add_argument("--out", required=True, help="sweep directory (one run directory per trial)")
    p.add_argument("--only", help="comma-separated trial names to run (default: all)")
    a = p.parse_args()
    base, trials = load_sweep(a.sweep_file)
    names = a.only.split(",") if a.only else list(trials)
    unknown = [name for name in names if name not in trials]
    if unknown:
        raise SystemExit(f"{a.sweep_file}: no trial named {', '.join(unknown)}; trials: {', '.join(trials)}")
    out, scores = Path(a.out), {}
    for name in names:
        start = time.perf_counter()
        try:
            scores[name] = run_trial(out / name, {**base, **trials[name]})
        except UserError as e:
            raise SystemExit(f"trial {name}: {e}") from None
        print(f"{name}: validation probe {100 * scores[name]['val_probe_acc']:.2f}%, "
              f"kNN {100 * scores[name]['val_knn_acc']:.2f}% ({time.perf_counter() - start:.0f} s)", flush=True)
    table = (f"{time.strftime('%Y-%m-%d')}, `{a.sweep_file}`, base {json.dumps(base, sort_keys=True)}; "
             f"validation split only\n\n" + sweep_table({n: trials[n] for n in names}, scores))
    (out / "sweep.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
