"""Two benches of the same seeds at two budgets, side by side (docs/benchmarks.md, "A second
budget"): for each method of the longer bench, its paired gap to SimCLR at each budget and how the gap
changed; for each method only the shorter bench ran, its gap to SimCLR at the longer budget (e.g.
rotation's 10 epochs against SimCLR's 20, about the same time). Test accuracy, percentage points,
per seed and mean with its 95% t-interval:

    .venv/bin/python benchmarks/compare_budgets.py runs/bench-wide runs/bench-20
"""

import argparse
import json
from pathlib import Path

from fashionssl.bench import MEASURES, rows_by_name
from fashionssl.seed_statistics import paired_difference


def accuracies(bench_dir: Path) -> dict[str, dict[int, dict]]:
    """{method: {seed: its row}} of a finished bench's comparison.json."""
    rows = json.loads((bench_dir / "comparison.json").read_text())["rows"]
    return {name: {r["seed"]: r for r in group} for name, group in rows_by_name([r for r in rows if "method" in r]).items()}


def describe(differences: list[float]) -> str:
    """The mean of per-seed differences with its 95% t-interval (a paired difference against zero), then each seed's."""
    mean, low, high = paired_difference(differences, [0.0] * len(differences))
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}] ({', '.join(f'{d:+.2f}' for d in differences)})"


def gaps(bench: dict, other: dict, name: str, key: str, seeds: list[int]) -> list[float]:
    """Method `name` of `bench` minus SimCLR of `other`, seed by seed, in points."""
    return [100 * (bench[name][s][key] - other["simclr"][s][key]) for s in seeds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shorter", type=Path, help="bench directory of the shorter budget")
    parser.add_argument("longer", type=Path, help="bench directory of the longer budget, the same seeds")
    args = parser.parse_args()
    short, long_ = accuracies(args.shorter), accuracies(args.longer)
    seeds = sorted(long_["simclr"])
    for key, measure in MEASURES:
        print(f"## {measure}, seeds {seeds}")
        for name in long_:
            if name == "simclr":
                print(f"simclr, longer minus shorter: {describe([100 * (long_['simclr'][s][key] - short['simclr'][s][key]) for s in seeds])}")
                continue
            at_short, at_long = gaps(short, short, name, key, seeds), gaps(long_, long_, name, key, seeds)
            print(f"{name} − simclr: shorter {describe(at_short)}; longer {describe(at_long)}; "
                  f"change {describe([b - a for a, b in zip(at_short, at_long)])}")
        for name in short:
            if name not in long_:
                print(f"{name} (shorter) − simclr (longer): {describe(gaps(short, long_, name, key, seeds))}")


if __name__ == "__main__":
    main()
