"""C++ kernels for what eager PyTorch runs as several passes over memory on the CPU, built on first
use with the system's C++ compiler and cached; PyTorch's own ops wherever they are not available.

Today one kernel: `max_pool_relu`, the ConvNet stages' relu(max_pool2d(x, 2)), bit for bit PyTorch's
results (max_pool_relu.cpp says how). On 1024 views of `cnn-bn`'s first stage (32 x 28 x 28, bf16
channels-last), forward + backward took 10.2 ms against 25.4 for PyTorch's max-pool alone (2-core
"Intel(R) Xeon(R) Processor", AVX-512, torch 2.13.0, 2026-12-06; benchmarks/bench_maxpool.py,
docs/benchmarks.md "A fused max-pool"). Built for AVX-512 or AVX2 as PyTorch's CPU dispatch says (so `ATEN_CPU_CAPABILITY=avx2`
builds and runs the AVX2 one); `FASHIONSSL_KERNELS=0` turns the kernels off.
"""

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable
from torch.utils import cpp_extension

SOURCE = Path(__file__).with_name("max_pool_relu.cpp")
ISA_FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2", "-mfma"], "AVX2": ["-mavx2", "-mfma"]}
LANES = {"AVX512": 16, "AVX2": 8}  # channels per vector: a pooled map's channels must be a multiple


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fashionssl"


def compiler() -> str:
    return os.environ.get("CXX", "c++")


def compile_command(output: Path, isa: str) -> list[str]:
    includes = [f"-I{path}" for path in cpp_extension.include_paths()]
    libraries = cpp_extension.library_paths()
    return [compiler(), "-shared", "-fPIC", "-std=c++20", "-O3", "-fopenmp", *ISA_FLAGS[isa],
            *includes, str(SOURCE), "-o", str(output), *[f"-L{path}" for path in libraries],
            *[f"-Wl,-rpath,{path}" for path in libraries], "-lc10", "-ltorch_cpu"]


@functools.cache
def cpu_lanes() -> int | None:
    """Builds (once per machine, source and PyTorch version: about 10 s) and loads the kernels;
    their vector width in channels, or None where they are off or could not be built (a warning
    says why, and training runs PyTorch's ops, slower but the same)."""
    isa = torch.backends.cpu.get_cpu_capability()
    if os.environ.get("FASHIONSSL_KERNELS", "1") == "0" or isa not in ISA_FLAGS:
        return None
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join([torch.__version__, sys.version, *ISA_FLAGS[isa]]).encode()).hexdigest()[:16]
    library = cache_dir() / f"kernels-{isa.lower()}-{key}.so"
    try:
        if not library.exists():
            build(library, isa)
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError, subprocess.SubprocessError) as error:
        warnings.warn(f"fashionssl: could not build its C++ max-pool kernel, so CPU training runs PyTorch's "
                      f"(the same results, about 20% slower): {error}. A C++ compiler (g++) enables it; "
                      f"FASHIONSSL_KERNELS=0 silences this.", stacklevel=2)
        return None
    return LANES[isa]


def build(library: Path, isa: str) -> None:
    """Compiles into a temporary file renamed into place, under a lock that dies with its holder
    (flock): concurrent processes build once, and a killed build leaves nothing half-written."""
    if shutil.which(compiler()) is None:
        raise OSError("no C++ compiler found")
    library.parent.mkdir(parents=True, exist_ok=True)
    with open(library.parent / "build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if library.exists():  # built by another process while this one waited
            return
        print(f"fashionssl: building its C++ max-pool kernel for {isa} (once, about 10 s)", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(dir=library.parent) as scratch:
            output = Path(scratch) / library.name
            result = subprocess.run(compile_command(output, isa), capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"the compiler failed: {result.stderr.strip()[-800:]}")
            os.replace(output, library)


class _MaxPoolReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, ceil_mode):
        y, code = torch.ops.fashionssl.max_pool_relu(x, ceil_mode)
        ctx.save_for_backward(code)
        ctx.input_size, ctx.ceil_mode = x.shape[-2:], ceil_mode
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        (code,) = ctx.saved_tensors
        return torch.ops.fashionssl.max_pool_relu_backward(grad, code, *ctx.input_size, ctx.ceil_mode), None


def max_pool_relu(pool: nn.MaxPool2d, x: torch.Tensor) -> torch.Tensor:
    """relu(pool(x)), exactly: one fused pass each way for a 2x2, stride-2 max-pool (floor or ceil mode)
    of a channels-last bf16 or float32 CPU tensor whose channels fill the kernel's vectors; PyTorch's
    ops otherwise."""
    fused = (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float32) and x.dim() == 4
             and x.shape[-2] >= 2 and x.shape[-1] >= 2 and x.is_contiguous(memory_format=torch.channels_last)
             and pool.kernel_size in (2, (2, 2)) and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))
             and pool.dilation in (1, (1, 1)) and not pool.return_indices)
    lanes = cpu_lanes() if fused else None
    if lanes is None or x.shape[1] % lanes:
        return F.relu(pool(x))
    return _MaxPoolReLU.apply(x, pool.ceil_mode)
