"""A max-pool of `cnn-bn`, alone: ATen's forward and backward against a dense backward from the same
saved indices (a 2x2 window's gradient goes where its index points), bit for bit ATen's result, and
against fashionssl's fused max-pool + ReLU kernel where it is built (docs/benchmarks.md, "Every
method since the fold" and "A fused max-pool"):

    .venv/bin/python benchmarks/bench_maxpool.py      # the first stage; and --channels 64 --size 14

Batch 1024 views (a main-job step) of 32 x 28 x 28 maps, bf16, channels-last, freed host memory kept
for reuse as in training; the median of 10 calls after one warm-up, in milliseconds.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from bench_throughput import cpu_model
from fashionssl import kernels
from fashionssl.device import keep_freed_host_memory


def median_ms(fn, calls: int = 10) -> float:
    fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * sorted(times)[calls // 2]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, default=1024)
    p.add_argument("--channels", type=int, default=32)
    p.add_argument("--size", type=int, default=28, help="height and width of the maps")
    a = p.parse_args()
    if a.size % 2:
        p.error(f"--size {a.size}: an even size (the dense backward pairs every row and column)")
    restore = keep_freed_host_memory(torch.device("cpu"))
    maps = torch.randn(a.views, a.channels, a.size, a.size, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    pooled, indices = F.max_pool2d(maps, 2, return_indices=True)
    grad = torch.randn_like(pooled)
    views, channels, height, width = maps.shape
    # Each full-resolution pixel's flat index, laid out as (1, H/2, 2, W/2, 2, 1) to meet its window's.
    position = torch.arange(height * width).view(1, height // 2, 2, width // 2, 2, 1)

    def aten_backward():
        return torch.ops.aten.max_pool2d_with_indices_backward(grad, maps, [2, 2], [2, 2], [0, 0], [1, 1], False,
                                                               indices)

    def windows(t: torch.Tensor) -> torch.Tensor:  # (N, C, H/2, W/2) -> (N, H/2, 1, W/2, 1, C), no copy
        return t.permute(0, 2, 3, 1).unsqueeze(2).unsqueeze(4)

    def dense(select):
        return lambda: select(windows(indices) == position, windows(grad)).view(views, height, width, channels
                                                                                ).permute(0, 3, 1, 2)

    dense_where = dense(lambda hit, g: torch.where(hit, g, 0))
    dense_product = dense(lambda hit, g: g * hit)
    assert torch.equal(dense_where(), aten_backward()) and torch.equal(dense_product(), aten_backward())
    print(f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {views} x {channels} x {height} x {width} bf16 channels-last\n")
    print("| max-pool 2x2 | ms |\n|---|---:|")
    print(f"| ATen forward (with int64 indices) | {median_ms(lambda: F.max_pool2d(maps, 2, return_indices=True)):.1f} |")
    print(f"| ATen backward (zero-fill, then scatter) | {median_ms(aten_backward):.1f} |")
    print(f"| of it, the zero-fill of the gradient alone | {median_ms(lambda: torch.zeros_like(maps)):.1f} |")
    print(f"| dense backward, where(index == position, grad, 0) | {median_ms(dense_where):.1f} |")
    print(f"| dense backward, grad * (index == position) | {median_ms(dense_product):.1f} |")
    lanes = kernels.cpu_lanes()
    if lanes and channels % lanes == 0:  # the fused kernel, ReLU included (PyTorch's ReLU is not timed above)
        fused, code = torch.ops.fashionssl.max_pool_relu(maps)
        backward = torch.ops.fashionssl.max_pool_relu_backward
        assert torch.equal(fused, pooled.relu())
        assert torch.equal(backward(grad, code, height, width),
                           torch.ops.aten.max_pool2d_with_indices_backward(grad * (pooled > 0), maps, [2, 2], [2, 2],
                                                                           [0, 0], [1, 1], False, indices))
        print(f"| fused max-pool + ReLU forward (one-byte codes) | {median_ms(lambda: torch.ops.fashionssl.max_pool_relu(maps)):.1f} |")
        print(f"| fused max-pool + ReLU backward (dense, once) | {median_ms(lambda: backward(grad, code, height, width)):.1f} |")
    restore()


if __name__ == "__main__":
    main()
