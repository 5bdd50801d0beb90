"""benchmarks/bench_throughput.py times fashionssl through `pretrain`, with the method options it is
given (SimCLR alone is `--opt rotation_weight=0`)."""

import subprocess

import pytest


def test_method_options_reach_pretrain(benchmark_script, small_data_dir):
    bench = benchmark_script("bench_throughput")

    def images_per_s(option: str) -> float:
        return bench.fashionssl_images_per_s("simclr", "cnn", 16, "fp32", 2, data_dir=str(small_data_dir),
                                             options=[option])

    assert images_per_s("rotation_weight=0") > 0
    with pytest.raises(subprocess.CalledProcessError):  # an option SimCLR does not have: pretrain refuses it
        images_per_s("no_such_option=1")
