"""Where a training step's time goes, layer by layer of a ConvNet encoder, without torch.profiler.

On the CPU the profiler misleads for this step: with it on, the first layer's large activation
buffers page-fault again (glibc's kept memory no longer covers them) and those ops took about 40 ms
each instead of 4-9 (2-core Intel Xeon, 2026-12-05). Here each convolution and BatchNorm of
`backbone.features` is timed with forward and backward hooks around it, each stage's fused max-pool
and ReLU around its call and between its gradients (wall clock; on the CPU every op is synchronous), and the
step's forward, backward and optimizer as wholes (the training loop's step, `train.train_step`,
split in three), over `--steps` steps after warm-up, in the configured precision and channels-last.
Where the first stage's conv and BatchNorm run folded (`encoders.conv_bn`), neither module is called,
so that stage is timed as one: from the backbone's start to the max-pool's, and from the end of the
max-pool's backward to the end of the step's backward.

    .venv/bin/python benchmarks/bench_layers.py --encoder cnn --batch-size 256
"""

import argparse
import time
from collections import defaultdict

import torch

from bench_throughput import cpu_model
from fashionssl import augment, encoders
from fashionssl.config import make_config, parse_option
from fashionssl.data import FASHION_MNIST_INFO
from fashionssl.device import autocast_dtype, keep_freed_host_memory
from fashionssl.methods import build_model
from fashionssl.optim import build_optimizer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="simclr")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, as pretrain's (repeatable), e.g. rotation_weight=0 for SimCLR alone")
    p.add_argument("--encoder", default="cnn", help="a ConvNet encoder: cnn, cnn-bn, cnn-bn-wide")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps, after 3 of warm-up")
    a = p.parse_args()

    device = torch.device("cpu")
    keep_freed_host_memory(device)  # as the training loop does
    cfg = make_config(method=a.method, encoder=a.encoder, method_options=dict(parse_option(o) for o in a.opt))
    model = build_model(cfg, FASHION_MNIST_INFO).to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(cfg.optimizer, model, 1e-3, cfg.weight_decay)
    amp = autocast_dtype(cfg.precision, device)
    images = torch.randint(0, 256, (a.batch_size, 28, 28), dtype=torch.uint8)
    views = augment.views(images, augment.make_config(cfg.augment), torch.Generator().manual_seed(0), model.view_spec)
    views = [v.contiguous(memory_format=torch.channels_last) for v in views]

    timing = [False]
    seconds: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}

    def start(key: str):
        return lambda *_: started.__setitem__(key, time.perf_counter())

    def stop(key: str):
        def record(*_):
            if timing[0]:
                seconds[key] += time.perf_counter() - started[key]
        return record

    for i, layer in enumerate(model.backbone.features):
        if isinstance(layer, (torch.nn.Conv2d, torch.nn.BatchNorm2d)):  # the pools and ReLUs run fused, below
            name = f"{i:2d} {type(layer).__name__}"
            layer.register_forward_pre_hook(start(f"{name} forward"))
            layer.register_forward_hook(stop(f"{name} forward"))
            layer.register_full_backward_pre_hook(start(f"{name} backward"))
            layer.register_full_backward_hook(stop(f"{name} backward"))

    # Each stage's max-pool and ReLU run as one call (kernels.max_pool_relu, or PyTorch's two ops),
    # not through their modules: timed around that call forward, and between the gradient hooks of its
    # output and its input backward.
    folded = model.backbone.batch_norm  # ConvNet runs conv_bn on its first stage when it has BatchNorm
    stage_calls = [0]
    untimed = encoders.max_pool_relu

    def timed_max_pool_relu(pool: torch.nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
        stage = stage_calls[0] % 3 + 1
        stage_calls[0] += 1
        name = f"stage {stage} max-pool+ReLU"
        if stage == 1 and folded:
            stop("0-1 conv+BatchNorm folded forward")()
            x.register_hook(start("0-1 conv+BatchNorm folded backward"))
        start(f"{name} forward")()
        y = untimed(pool, x)
        stop(f"{name} forward")()
        y.register_hook(start(f"{name} backward"))
        x.register_hook(stop(f"{name} backward"))
        return y

    encoders.max_pool_relu = timed_max_pool_relu
    if folded:
        model.backbone.register_forward_pre_hook(start("0-1 conv+BatchNorm folded forward"))

    def step() -> None:
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=amp or torch.bfloat16, enabled=amp is not None):
            loss, _ = model(views, None)
        t1 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        optimizer.step()
        if timing[0] and folded:
            seconds["0-1 conv+BatchNorm folded backward"] += t2 - started["0-1 conv+BatchNorm folded backward"]
        if timing[0]:
            seconds["step: forward"] += t1 - t0
            seconds["step: backward"] += t2 - t1
            seconds["step: optimizer"] += time.perf_counter() - t2

    for _ in range(3):
        step()
    timing[0] = True
    for _ in range(a.steps):
        step()
    print(f"{time.strftime('%Y-%m-%d')}, {cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{a.method} {a.encoder}, batch {a.batch_size}, {amp or 'fp32'}, channels-last\n")
    print("| part | ms per step |\n|---|---:|")
    for key, total in sorted(seconds.items(), key=lambda kv: (not kv[0].startswith("step"), kv[0])):
        print(f"| {key} | {total / a.steps * 1000:.1f} |")
    if not folded:
        print("\n(The first layer's backward reads 0: its input needs no gradient, so the hook does not run.)")


if __name__ == "__main__":
    main()
