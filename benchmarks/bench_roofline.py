"""How far a training step is from the machine's arithmetic peak: measured matmul and conv peaks, the
FLOPs of one training step per image for each method and encoder and, with `--measure`, the fraction
of the peak that the real training loop reaches.

Peaks are the fastest of several timed samples after warm-up (a peak is what the hardware does
undisturbed; on a shared machine other jobs only ever slow a sample down), each sample long enough
that launch and synchronisation overhead does not count. FLOPs are counted by
`torch.utils.flop_counter.FlopCounterMode` over forward and backward of one step
(`loss, _ = model(views, labels); loss.backward()`) at `--flop-batch` images, divided by that batch.
It counts matmuls and convolutions only: elementwise work (augmentation, BatchNorm, activations, the
optimizer) is not counted, so "fraction of peak" is of the arithmetic the step must do, not of all
it does. In-batch similarity matrices grow with the batch: pass `--flop-batch` equal to
`--batch-size` for an exact count at the measured batch (the default 16 undercounts them slightly).
On CUDA PyTorch's defaults hold, as in training: fp32 convolutions run in TF32, fp32 matmuls do not.

    .venv/bin/python benchmarks/bench_roofline.py --quick                      # end to end in under a minute
    .venv/bin/python benchmarks/bench_roofline.py --encoders cnn-bn --methods simclr,byol --measure
    python benchmarks/bench_roofline.py --device cuda --matmul-size 8192 --flop-batch 512 --measure
"""

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench_throughput import cpu_model, fashionssl_images_per_s
from fashionssl import augment
from fashionssl.config import make_config
from fashionssl.data import FASHION_MNIST_INFO
from fashionssl.device import autocast_dtype
from fashionssl.methods import METHODS, build_model

# The 3x3 convolutions of the cnn / cnn-bn encoders: (in channels, out channels, side of the input).
CONV_SHAPES = [(1, 32, 28), (32, 64, 14), (64, 128, 7)]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(fn: Callable[[], object], device: torch.device, repeats: int, min_sample_s: float) -> float:
    """Seconds per call of `fn`: the fastest of `repeats` samples, after warm-up calls (allocator,
    library start-up, kernel selection); each sample runs as many calls as it takes to last
    `min_sample_s`, as a GPU kernel can be shorter than its launch and synchronisation."""

    def sample(calls: int) -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        return time.perf_counter() - start

    sample(3)
    calls = 1
    while sample(calls) < min_sample_s:
        calls *= 2
    return min(sample(calls) / calls for _ in range(repeats))


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul and convolution FLOPs of one call of `fn` (a multiply-add counts two)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def gflops(fn: Callable[[], object], device: torch.device, repeats: int, min_sample_s: float) -> float:
    return count_flops(fn) / best_seconds(fn, device, repeats, min_sample_s) / 1e9


def matmul_gflops(n: int, dtype: torch.dtype, device: torch.device, repeats: int, min_sample_s: float) -> float:
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    return gflops(lambda: a @ b, device, repeats, min_sample_s)


@torch.no_grad()
def conv_gflops(c_in: int, c_out: int, side: int, batch: int, dtype: torch.dtype, device: torch.device,
                repeats: int, min_sample_s: float) -> float:
    """Forward of one 3x3, padding 1 convolution in channels-last layout, as the encoders train."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1).to(device, dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, c_in, side, side, device=device, dtype=dtype).to(memory_format=torch.channels_last)
    return gflops(lambda: conv(x), device, repeats, min_sample_s)


def step_flops_per_image(method: str, encoder: str, batch: int, device: torch.device) -> float:
    """Forward + backward FLOPs of one training step of `batch` random images, per image (fp32:
    the count does not depend on the precision)."""
    model = build_model(make_config(method=method, encoder=encoder), FASHION_MNIST_INFO).to(device).train()
    images = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8)
    views = augment.views(images, augment.make_config("default"), torch.Generator().manual_seed(0), model.view_spec)
    views = [v.to(device) for v in views]
    labels = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        loss, _ = model(views, labels)
        loss.backward()

    return count_flops(step) / batch


def achieved_fraction(flops_per_image: float, images_per_s: float, peak_gflops: float) -> float:
    """The fraction of a peak that a training speed reaches in counted arithmetic."""
    return flops_per_image * images_per_s / 1e9 / peak_gflops


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--encoders", default="cnn,cnn-bn,resnet18", help="comma list of encoders")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of methods (default: all)")
    p.add_argument("--matmul-size", type=int, default=2048, help="n of the n x n @ n x n matmul")
    p.add_argument("--conv-batch", type=int, default=512)
    p.add_argument("--repeats", type=int, default=10, help="timed samples of each peak")
    p.add_argument("--flop-batch", type=int, default=16, help="images in the step whose FLOPs are counted")
    p.add_argument("--measure", action="store_true", help="also time real training steps (bench_throughput.py)")
    p.add_argument("--batch-size", type=int, default=512, help="batch of the measured steps")
    p.add_argument("--steps", type=int, default=10, help="steps in each measured epoch")
    p.add_argument("--data-dir", help="folder with the Fashion-MNIST IDX files (for --measure)")
    p.add_argument("--quick", action="store_true", help="tiny sizes and few repeats: checks the script end to end")
    a = p.parse_args()
    if a.quick:
        a.matmul_size, a.conv_batch, a.repeats, a.flop_batch, a.batch_size, a.steps = 256, 32, 3, 4, 32, 2
    min_sample_s = 0.01 if a.quick else 0.1
    device = torch.device(a.device)
    torch.backends.cudnn.benchmark = True  # a peak is that of the fastest algorithm

    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    print(f"{time.strftime('%Y-%m-%d')}, {hardware}, torch {torch.__version__}, {torch.get_num_threads()} threads")

    # The reference peak is the matmul's in the precision that `--precision auto` trains in. bf16 is
    # timed only where that is bf16: emulated, on a CPU without AVX512-BF16 or AMX, it ran at 0-15
    # GFLOP/s and took all but a minute of the script's 16.6 minutes (2-core AMD EPYC with AVX2 only,
    # 2026-12-07).
    precision = "bf16" if autocast_dtype("auto", device) == torch.bfloat16 else "fp32"
    dtypes = {name: dtype for name, dtype in DTYPES.items() if name in ("fp32", precision)}
    n = a.matmul_size
    peaks = {f"matmul {n}x{n} @ {n}x{n}": {name: matmul_gflops(n, dtype, device, a.repeats, min_sample_s)
                                           for name, dtype in dtypes.items()}}
    for c_in, c_out, side in CONV_SHAPES:
        peaks[f"conv 3x3 {c_in}->{c_out} at {side}x{side}, batch {a.conv_batch}, channels-last, forward"] = {
            name: conv_gflops(c_in, c_out, side, a.conv_batch, dtype, device, a.repeats, min_sample_s)
            for name, dtype in dtypes.items()}
    print(f"\n| peak on {device.type} | fp32 GFLOP/s | bf16 GFLOP/s |\n|---|---:|---:|")
    for name, row in peaks.items():
        bf16 = f"{row['bf16']:,.0f}" if "bf16" in row else "emulated here, not timed"
        print(f"| {name} | {row['fp32']:,.0f} | {bf16} |")

    peak = peaks[f"matmul {n}x{n} @ {n}x{n}"][precision]
    columns = ["GFLOP per image (fwd+bwd)", f"images/s at the {precision} matmul peak"]
    if a.measure:
        columns += [f"measured images/s, batch {a.batch_size}, {precision}", "achieved GFLOP/s",
                    f"fraction of the {precision} matmul peak"]
    print("\n| method | encoder | " + " | ".join(columns) + " |\n|---|---|" + "---:|" * len(columns))
    for encoder in a.encoders.split(","):
        for method in a.methods.split(","):
            flops = step_flops_per_image(method, encoder, a.flop_batch, device)
            cells = [f"{flops / 1e9:.3f}", f"{peak * 1e9 / flops:,.0f}"]
            if a.measure:
                speed = fashionssl_images_per_s(method, encoder, a.batch_size, "auto+cl", a.steps, a.device,
                                                data_dir=a.data_dir)
                cells += [f"{speed:,.0f}", f"{flops * speed / 1e9:,.0f}",
                          f"{achieved_fraction(flops, speed, peak):.1%}"]
            print(f"| {method} | {encoder} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
