"""Pretraining throughput of fashionssl against the reference blog script, measured in one run.

fashionssl is timed through its real training loop (`fashionssl.train.pretrain` on a training
subset: batched augmentation, forward, backward, optimizer step, logging), reading the images/s of
the last epoch so that start-up is excluded. The reference is `../shared/peers/seed_simclr.py` run
in its own venv (set up by `../shared/peers/setup_peer.sh /tmp/peer`), timed over `--seed-batches`
batches by its own per-epoch clock. Both count images per second, each image giving two views.

    .venv/bin/python benchmarks/bench_throughput.py --encoder cnn --batch-size 256
    .venv/bin/python benchmarks/bench_throughput.py --encoder cnn-bn --batch-size 512 --variants bf16+cl \
        --methods simclr,moco,byol --seed-batches 0      # every method's step, quietly, no reference
"""

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from fashionssl.config import make_config
from fashionssl.runlog import epoch_lines
from fashionssl.train import pretrain

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"


def fashionssl_images_per_s(method: str, encoder: str, batch_size: int, precision: str, channels_last: bool,
                            steps: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg = make_config(method=method, encoder=encoder, batch_size=batch_size, precision=precision, channels_last=channels_last,
                          epochs=2, warmup_epochs=0.0, train_subset=batch_size * steps, val_size=5000,
                          knn_every=0, out=out)
        run_dir = pretrain(cfg)
        return epoch_lines(run_dir)[-1]["epoch_images_per_s"]


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--encoder", default="cnn", help="the reference script's architecture is 'cnn'")
    p.add_argument("--batch-size", type=int, default=256, help="the reference script uses 256")
    p.add_argument("--steps", type=int, default=40, help="steps in the timed epoch")
    p.add_argument("--variants", default="fp32,bf16,bf16+cl",
                   help="comma list of fp32 | bf16, '+cl' for channels_last")
    p.add_argument("--peer-dir", type=Path, default=Path("/tmp/peer"), help="where setup_peer.sh put the seed's venv")
    p.add_argument("--peers", type=Path, default=PEERS, help="folder holding seed_simclr.py")
    p.add_argument("--seed-batches", type=int, default=235, help="235 = the reference's whole epoch; 0 = skip it")
    p.add_argument("--methods", default="simclr", help="comma list of methods to time")
    a = p.parse_args()

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    rows = []
    seed = None
    if a.seed_batches and (a.peer_dir / "venv").exists():
        seed = seed_images_per_s(a.peer_dir, a.peers, a.seed_batches)
    elif a.seed_batches:
        print(f"reference venv not found in {a.peer_dir}: run ../shared/peers/setup_peer.sh {a.peer_dir}", file=sys.stderr)
    for method in a.methods.split(","):
        for variant in a.variants.split(","):
            precision, _, layout = variant.partition("+")
            speed = fashionssl_images_per_s(method, a.encoder, a.batch_size, precision, layout == "cl", a.steps)
            rows.append((f"fashionssl {method} {a.encoder}, batch {a.batch_size}, {variant}", speed))
    if seed is not None:
        rows.insert(0, ("reference script (seed_simclr.py), batch 256", seed))
    print("\n| pretraining | images/s | vs reference |\n|---|---:|---:|")
    for name, speed in rows:
        ratio = f"{speed / seed:.2f}x" if seed else "n/a"
        print(f"| {name} | {speed:,.0f} | {ratio} |")


if __name__ == "__main__":
    main()
