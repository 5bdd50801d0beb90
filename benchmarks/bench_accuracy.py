"""Accuracy table of finished runs beside the baselines (raw pixels, untrained encoder).

The same protocol and table as `fashionssl bench`, for run directories made by hand (e.g. the main
job and configs/long.toml), which `fashionssl bench` would not retrain:

    .venv/bin/python benchmarks/bench_accuracy.py runs/simclr-cnn-bn-...  [more run dirs]
"""

import argparse
import json
from pathlib import Path

from fashionssl.bench import baseline_rows, comparison_table, epoch_stats
from fashionssl.config import make_config


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="run directories holding results.json")
    p.add_argument("--encoder", default="cnn-bn", help="architecture of the untrained-encoder baseline")
    p.add_argument("--data-dir")
    a = p.parse_args()
    rows = baseline_rows(make_config(None, encoder=a.encoder, data_dir=a.data_dir, val_size=5000, device="cpu", seed=0))
    for run in a.runs:
        results = json.loads((run / "results.json").read_text())
        name = f"{results['method']} {results['encoder']}, {results['epochs']} epochs"
        rows.append({"name": name, **results, **epoch_stats(run)})
    print(comparison_table(rows))


if __name__ == "__main__":
    main()
