"""Pretraining throughput of fashionssl against the reference blog script and, optionally, against
another commit of fashionssl, all measured in one run.

fashionssl is timed through its real training loop (`python -m fashionssl pretrain` on a training
subset: batched augmentation, forward, backward, optimizer step, logging), reading the images/s of
the last of two epochs so that start-up is excluded. Each row runs in its own process, with the
source tree on PYTHONPATH: this checkout's `src`, or with `--baseline REV` a git worktree of REV, so
"before" and "after" are timed on the same machine minutes apart. Shared machines are noisy (the same
step measured 1,450 to 2,500 images/s in one hour here), so each figure is the median of `--repeats`
runs, baseline and now alternating.
The reference is `../shared/peers/seed_simclr.py` run in its own venv (set up by
`../shared/peers/setup_peer.sh /tmp/peer`), timed over `--seed-batches` batches by its own per-epoch
clock. Both count images per second, each image giving two views (and, for fashionssl's SimCLR at its
defaults since 2026-12-07, a rotated copy of the first for E-SSL's term: 1.65x the step; `--opt
rotation_weight=0` times SimCLR alone, as the reference and commits before 43c5ca7, which do not know
the option: time those without it).

    .venv/bin/python benchmarks/bench_throughput.py --encoder cnn --batch-size 256
    .venv/bin/python benchmarks/bench_throughput.py --encoder cnn-bn --batch-size 512 --variants bf16+cl \\
        --methods simclr,moco,byol --seed-batches 0 --baseline ec743ad   # every method's step, then vs now
"""

import argparse
import contextlib
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch

from fashionssl.runlog import epoch_lines

REPO = Path(__file__).resolve().parents[1]
PEERS = REPO.parent / "shared" / "peers"


def opt_flags(options: list[str]) -> list[str]:
    """'key=value' method options as pretrain's command-line flags: --opt key=value for each."""
    return [flag for option in options for flag in ("--opt", option)]


def fashionssl_images_per_s(method: str, encoder: str, batch_size: int, variant: str, steps: int,
                            device: str = "auto", src: Path = REPO / "src", data_dir: str | None = None,
                            options: list[str] = ()) -> float:
    """images/s of the second of two epochs of `steps` steps, run from the fashionssl sources in `src`.
    variant: fp32 | bf16 | auto, '+cl' for channels-last (e.g. 'bf16+cl'); `options`: 'key=value'
    method options, each passed as pretrain's --opt."""
    precision, _, layout = variant.partition("+")
    with tempfile.TemporaryDirectory() as out:
        run_dir = Path(out) / "run"
        args = ["--method", method, "--encoder", encoder, "--batch-size", str(batch_size), "--precision", precision,
                "--channels-last" if layout == "cl" else "--no-channels-last", "--epochs", "2",
                "--warmup-epochs", "0", "--train-subset", str(batch_size * steps), "--knn-every", "0",
                "--device", device, "--out", str(run_dir), *(["--data-dir", data_dir] if data_dir else []),
                *opt_flags(options)]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
        subprocess.run([sys.executable, "-m", "fashionssl", "pretrain", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return epoch_lines(run_dir)[-1]["epoch_images_per_s"]


@contextlib.contextmanager
def worktree(rev: str) -> Iterator[Path]:
    """A temporary git worktree of `rev` (removed afterwards); yields its root."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "--quiet", str(root), rev], check=True)
        try:
            yield root
        finally:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(root)], check=True)


def seed_images_per_s(peer_dir: Path, peers: Path, batches: int) -> float:
    """Run the reference script for one capped epoch and read its printed wall time."""
    out = subprocess.run([str(peer_dir / "venv/bin/python"), str(peers / "seed_simclr.py"), "--epochs", "1",
                          "--eval-epochs", "0", "--max-batches", str(batches)],
                         cwd=peer_dir, capture_output=True, text=True).stdout
    # With --eval-epochs 0 the script crashes after pretraining (its linear_evaluation returns an unset
    # variable), so its exit status says nothing: the timing line it printed is what counts.
    match = re.search(r"\[(\d+) batches, ([\d.]+)s\]", out)
    if match is None:
        raise RuntimeError(f"the reference script printed no epoch timing:\n{out}")
    n, seconds = match.groups()
    return int(n) * 256 / float(seconds)


def cpu_model() -> str:
    """The processor's name as lscpu gives it (machines of one kind differ: record it with every figure)."""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="cnn", help="the reference script's architecture is 'cnn'")
    p.add_argument("--batch-size", type=int, default=256, help="the reference script uses 256")
    p.add_argument("--steps", type=int, default=40, help="steps in each timed epoch")
    p.add_argument("--repeats", type=int, default=3, help="runs of each row; the median is reported")
    p.add_argument("--variants", default="fp32,bf16,bf16+cl",
                   help="comma list of fp32 | bf16 | auto, '+cl' for channels_last")
    p.add_argument("--methods", default="simclr", help="comma list of methods to time")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option for every fashionssl row, as pretrain's (repeatable), e.g. rotation_weight=0; "
                        "--baseline's commit gets it too and must know it")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (default: where fashionssl finds them)")
    p.add_argument("--baseline", metavar="REV", help="also time this git commit of fashionssl, row by row")
    p.add_argument("--peer-dir", type=Path, default=Path("/tmp/peer"), help="where setup_peer.sh put the seed's venv")
    p.add_argument("--peers", type=Path, default=PEERS, help="folder holding seed_simclr.py")
    p.add_argument("--seed-batches", type=int, default=235, help="235 = the reference's whole epoch; 0 = skip it")
    a = p.parse_args()

    print(f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    seed = None
    if a.seed_batches and (a.peer_dir / "venv").exists():
        seed = seed_images_per_s(a.peer_dir, a.peers, a.seed_batches)
    elif a.seed_batches:
        print(f"reference venv not found in {a.peer_dir}: run ../shared/peers/setup_peer.sh {a.peer_dir}", file=sys.stderr)
    with contextlib.ExitStack() as stack:
        sources = [("now", REPO / "src")]
        if a.baseline:
            sources.insert(0, (a.baseline, stack.enter_context(worktree(a.baseline)) / "src"))
        rows = []  # (name, {"now" or the baseline: images/s})
        for method in a.methods.split(","):
            for variant in a.variants.split(","):
                runs: dict[str, list[float]] = {name: [] for name, _ in sources}
                for _ in range(a.repeats):
                    for name, src in sources:
                        runs[name].append(fashionssl_images_per_s(method, a.encoder, a.batch_size, variant, a.steps,
                                                                  a.device, src, a.data_dir, a.opt))
                speeds = {name: statistics.median(values) for name, values in runs.items()}
                options = "".join(f", {option}" for option in a.opt)
                rows.append((f"fashionssl {method} {a.encoder}, batch {a.batch_size}, {variant}{options}", speeds))
    columns = ["images/s"] + ([f"images/s at {a.baseline}", "now vs baseline"] if a.baseline else [])
    columns += ["vs reference"] if seed else []
    print("\n| pretraining | " + " | ".join(columns) + " |\n|---|" + "---:|" * len(columns))
    if seed:
        print("| reference script (seed_simclr.py), batch 256 | " + " | ".join(
            [f"{seed:,.0f}"] + ["", ""] * bool(a.baseline) + ["1.00x"]) + " |")
    for name, speeds in rows:
        cells = [f"{speeds['now']:,.0f}"]
        if a.baseline:
            cells += [f"{speeds[a.baseline]:,.0f}", f"{speeds['now'] / speeds[a.baseline]:.2f}x"]
        if seed:
            cells.append(f"{speeds['now'] / seed:.2f}x")
        print(f"| {name} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    main()
