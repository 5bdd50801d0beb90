"""benchmarks/seed_table.py gathers one comparison's seeds from several folders: runs of one method
at two recipes stay apart, named by what differs; settings that only watch training do not split a
method, nor do whole numbers written as 1 or 1.0; a seed found twice is refused; differences from SimCLR are paired by seed."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_run(run: Path, method: str, seed: int, probe: float, lr: float = 4e-3, knn_every: int = 0,
              scale: list = [0.4, 1.0]) -> None:
    run.mkdir(parents=True)
    config = {"method": method, "method_options": {"scale": scale}, "lr": lr, "seed": seed,
              "out": str(run), "knn_every": knn_every}
    (run / "config.json").write_text(json.dumps(config))
    (run / "results.json").write_text(json.dumps({"method": method, "linear_probe_test_acc": probe,
                                                  "linear_probe_val_acc": probe, "knn_test_acc": probe - 0.05}))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "epoch_seconds": 60.0, "epoch_images_per_s": 1000}) + "\n")


def seed_table(*folders: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "seed_table.py"), *map(str, folders)],
                          capture_output=True, text=True)


def test_seeds_from_several_folders_are_one_comparison(tmp_path):
    first, later = tmp_path / "bench", tmp_path / "bench-seeds"
    write_run(first / "simclr", "simclr", 0, 0.90, knn_every=5)  # the kNN monitor: the same recipe
    write_run(first / "swav", "swav", 0, 0.91, lr=8e-3)
    for seed, (simclr, swav) in enumerate([(0.91, 0.93), (0.92, 0.94)], start=1):
        write_run(later / "simclr" / f"seed-{seed}", "simclr", seed, simclr)
        write_run(later / "swav" / f"seed-{seed}", "swav", seed, swav)
    write_run(tmp_path / "sweep" / "swav-lr-4e-3", "swav", 0, 0.92)
    (tmp_path / "sweep" / "not-evaluated").mkdir()  # no results.json: not read
    out = seed_table(first, later, tmp_path / "sweep")
    assert out.returncode == 0, out.stderr
    assert "| simclr | 90.00 / 90.00 / 85.00 | 91.00 / 91.00 / 86.00 | 92.00 / 92.00 / 87.00 |" in out.stdout
    assert "| swav (lr 0.008) | 91.00 / 91.00 / 86.00 |  |  |" in out.stdout
    assert "| swav (lr 0.004) | 93.00 ± 1.00% | 88.00 ± 1.00% |  | 1.0 min | 1,000 | 3 |" in out.stdout
    assert "| swav (lr 0.004) | linear probe | +2.00 points | [+2.00, +2.00] | beats SimCLR |" in out.stdout
    assert "swav (lr 0.008) | linear probe" not in out.stdout  # one seed: no interval


def test_a_seed_found_twice_is_refused(tmp_path):
    write_run(tmp_path / "a" / "simclr", "simclr", 0, 0.90)
    write_run(tmp_path / "b" / "simclr", "simclr", 0, 0.91)
    out = seed_table(tmp_path / "a", tmp_path / "b")
    assert out.returncode == 2
    assert "are both simclr at seed 0; pass only one of them" in out.stderr
    assert "Traceback" not in out.stderr


def test_whole_numbers_written_either_way_are_one_recipe(tmp_path):
    write_run(tmp_path / "a", "swav", 0, 0.90, scale=[0.4, 1.0])  # a config's float
    write_run(tmp_path / "b", "swav", 1, 0.92, scale=[0.4, 1])  # --opt's int
    out = seed_table(tmp_path)
    assert out.returncode == 0, out.stderr
    assert "| swav | 91.00 ± 1.41% |" in out.stdout and "scale" not in out.stdout
