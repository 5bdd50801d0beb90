"""benchmarks/compare_budgets.py pairs two benches by seed: a gap to SimCLR at each budget, its change,
and a method only the shorter bench ran against the longer bench's SimCLR."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_bench(folder: Path, accuracies: dict[str, list[float]]) -> Path:
    rows = [{"name": name, "method": name, "seed": seed, "linear_probe_test_acc": acc, "knn_test_acc": acc}
            for seed in range(3) for name, accs in accuracies.items() for acc in [accs[seed]]]
    folder.mkdir()
    (folder / "comparison.json").write_text(json.dumps({"rows": rows}))
    return folder


def test_gaps_and_their_change_are_paired_by_seed(tmp_path):
    short = write_bench(tmp_path / "short", {"simclr": [0.90, 0.91, 0.92], "byol": [0.89, 0.90, 0.91],
                                             "rotation": [0.93, 0.94, 0.95]})
    long_ = write_bench(tmp_path / "long", {"simclr": [0.91, 0.92, 0.93], "byol": [0.89, 0.90, 0.91]})
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compare_budgets.py"), str(short), str(long_)],
                         capture_output=True, text=True, check=True).stdout
    assert "byol − simclr: shorter -1.00 [-1.00, -1.00] (-1.00, -1.00, -1.00); longer -2.00" in out
    assert "change -1.00 [-1.00, -1.00]" in out
    assert "rotation (shorter) − simclr (longer): +2.00 [+2.00, +2.00] (+2.00, +2.00, +2.00)" in out
