"""Scaling on this machine: one process against N torchrun processes, the same global batch and threads.

Each configuration runs `fashionssl pretrain` for two epochs on a training subset and reads the
images/s of the second epoch from metrics.jsonl (the first includes start-up). The total number of
threads is the same in every row (`--threads`, split evenly over the processes), so on a CPU the
rows compare how the work is divided, not how much hardware it gets.

    .venv/bin/python benchmarks/bench_scaling.py --processes 1,2
    python benchmarks/bench_scaling.py --processes 1,2,4,8 --device cuda   # one GPU per process
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_throughput import opt_flags
from fashionssl.runlog import epoch_lines


def images_per_s(processes: int, threads: int, args: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        launcher = [sys.executable, "-m", "fashionssl"] if processes == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "fashionssl"]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, threads // processes))}
        subprocess.run([*launcher, "pretrain", *args, "--out", str(out)], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        return epoch_lines(out)[-1]["epoch_images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", default="1,2", help="comma list of process counts")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="total threads of every configuration")
    p.add_argument("--method", default="simclr")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, as pretrain's (repeatable), e.g. rotation_weight=0 for SimCLR alone")
    p.add_argument("--train-subset", type=int, default=10240)
    p.add_argument("--batch-size", type=int, default=512, help="the global batch")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda (each process takes the GPU of its LOCAL_RANK)")
    a = p.parse_args()
    args = ["--method", a.method, "--epochs", "2", "--warmup-epochs", "0", "--train-subset", str(a.train_subset),
            "--batch-size", str(a.batch_size), "--knn-every", "0", "--device", a.device,
            *opt_flags(a.opt)]
    print(f"{time.strftime('%Y-%m-%d')}, {a.threads} threads in all, {a.method} cnn-bn, global batch {a.batch_size}, "
          f"device {a.device}{''.join(f', {option}' for option in a.opt)}")
    rows = [(n, images_per_s(n, a.threads, args)) for n in map(int, a.processes.split(","))]
    print("\n| processes | threads each | images/s | vs 1 process |\n|---:|---:|---:|---:|")
    for n, speed in rows:
        print(f"| {n} | {max(1, a.threads // n)} | {speed:,.0f} | {speed / rows[0][1]:.2f}x |")


if __name__ == "__main__":
    main()
