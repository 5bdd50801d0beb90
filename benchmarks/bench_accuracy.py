"""Accuracy table: raw pixels and an untrained encoder as baselines, beside pretrained runs.

Every row uses the same protocol as `fashionssl evaluate` (linear probe with weight decay chosen on
the validation split, then refitted on train+val; kNN cosine k=200 T=0.1; test set once), so the
baselines are the numbers a method has to beat.

    .venv/bin/python benchmarks/bench_accuracy.py runs/simclr-cnn-bn-...  [more run dirs]
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from fashionssl.augment import make_config, normalize
from fashionssl.data import load_fashion_mnist
from fashionssl.encoders import build_encoder
from fashionssl.evaluate import evaluate_backbone, evaluate_features


def pretrain_seconds(run_dir: Path) -> float:
    """Epochs x the median epoch time: a run that shared the CPU for a while still gives its quiet cost."""
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    seconds = [line["epoch_seconds"] for line in lines if "epoch_seconds" in line]
    return len(seconds) * statistics.median(seconds)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="*", type=Path, help="run directories holding results.json")
    p.add_argument("--encoder", default="cnn-bn", help="architecture of the untrained-encoder baseline")
    p.add_argument("--data-dir")
    a = p.parse_args()

    data = load_fashion_mnist(a.data_dir)
    aug, cpu = make_config("default"), torch.device("cpu")
    rows = []
    start = time.perf_counter()
    pixels = [(normalize(s.images, aug).flatten(1), s.labels) for s in (data.train, data.val, data.test)]
    raw = evaluate_features(*pixels)
    rows.append(("raw pixels (784-d)", raw, "", time.perf_counter() - start))
    torch.manual_seed(0)
    untrained = evaluate_backbone(build_encoder(a.encoder), data, aug, cpu)
    rows.append((f"untrained {a.encoder} (seed 0)", untrained, "", untrained["eval_seconds"]))
    for run in a.runs:
        results = json.loads((run / "results.json").read_text())
        name = f"{results['method']} {results['encoder']}, {results['epochs']} epochs"
        rows.append((name, results, f"{pretrain_seconds(run) / 60:.1f} min", results["eval_seconds"]))

    print(f"\nFashion-MNIST test accuracy, {time.strftime('%Y-%m-%d')}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| features | linear probe | (weight decay) | kNN k=200 | pretraining (epochs x median epoch) | evaluation |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r, pretrain, seconds in rows:
        print(f"| {name} | {100 * r['linear_probe_test_acc']:.2f}% | {r['linear_probe_weight_decay']:g} | "
              f"{100 * r['knn_test_acc']:.2f}% | {pretrain} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
