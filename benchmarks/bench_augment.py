"""Throughput of `augment.views` (2 views per image) for each preset, on real Fashion-MNIST images.

Prints a Markdown table of images/s, an image counting once however many views it gets. Uses the
median call time, because a shared CPU makes the mean swing with other people's jobs.

    python benchmarks/bench_augment.py [--batch 512] [--repeats 50] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # benchmark this checkout

from fashionssl.augment import PRESETS, make_config, views  # noqa: E402
from fashionssl.data import load_dataset  # noqa: E402


def time_views(images: torch.Tensor, preset: str, repeats: int) -> float:
    """Median seconds per views() call, after a warm-up (allocator, kernel selection)."""
    generator = torch.Generator(images.device).manual_seed(0)
    seconds = []
    for i in range(repeats + 5):
        start = time.perf_counter()
        views(images, make_config(preset), generator)
        if images.is_cuda:
            torch.cuda.synchronize()
        if i >= 5:
            seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the target machine has 2)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = load_dataset().train.images[: args.batch].to(args.device)

    print(f"views(n=2), batch {len(images)}, {args.device}, {args.threads} threads, torch {torch.__version__}\n")
    print("| preset | ms / batch | images/s |")
    print("|---|---:|---:|")
    for preset in PRESETS:
        seconds = time_views(images, preset, args.repeats)
        print(f"| {preset} | {seconds * 1e3:.2f} | {len(images) / seconds:,.0f} |")


if __name__ == "__main__":
    main()
