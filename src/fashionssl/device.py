"""Where to run and in which precision."""

import torch

from .errors import UserError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else the CPU; an explicit device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} asked for, but this PyTorch sees no CUDA GPU; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"device type {device.type!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting, or None for plain fp32.

    'auto' takes bf16 where the hardware computes it natively: CUDA GPUs with bf16 support, and
    CPUs with AVX512-BF16/AMX (oneDNN's bf16 kernels there run about twice as fast as fp32 for our
    convolutions); elsewhere bf16 would be emulated and slower, so fp32.
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
