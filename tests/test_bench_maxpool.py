"""benchmarks/bench_maxpool.py times only backward passes that give ATen's max-pool gradient bit for bit:
it refuses to print a table otherwise."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_dense_backward_is_atens_and_every_row_is_timed():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_maxpool.py"), "--views", "8", "--channels", "4"],
                         capture_output=True, text=True, check=True).stdout
    assert "8 x 4 x 28 x 28 bf16 channels-last" in out
    assert sum(line.startswith("| ") and line.endswith(" |") and "ms" not in line for line in out.splitlines()) == 5


def test_the_fused_kernel_is_timed_where_it_is_built():
    from fashionssl import kernels
    if kernels.cpu_lanes() is None:
        pytest.skip("the kernel is not built here (no compiler or no AVX2)")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_maxpool.py"), "--views", "4", "--channels", "16",
                          "--size", "14"], capture_output=True, text=True, check=True).stdout
    assert "4 x 16 x 14 x 14 bf16 channels-last" in out
    assert "| fused max-pool + ReLU forward" in out and "| fused max-pool + ReLU backward" in out
