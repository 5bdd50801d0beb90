"""Schedules as per-step arrays: the loop indexes them, so a resumed run sees the same values."""

import math

import torch


def warmup_cosine(base: float, total_steps: int, warmup_steps: int = 0, final: float = 0.0) -> torch.Tensor:
    """Linear warm-up from 0 to `base` over `warmup_steps`, then half a cosine from `base` to `final`.

    Value i is the one used for step i (0-based), so the first step already trains (lr = base/warmup).
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}) and total_steps >= 1")
    steps = torch.arange(total_steps, dtype=torch.float64)
    warm = base * (steps + 1) / max(warmup_steps, 1)
    progress = (steps - warmup_steps) / max(total_steps - warmup_steps, 1)
    cosine = final + 0.5 * (base - final) * (1 + torch.cos(math.pi * progress))
    return torch.where(steps < warmup_steps, warm, cosine)


def cosine_momentum(base: float, total_steps: int) -> torch.Tensor:
    """BYOL's target-network momentum for each step: tau_k = 1 - (1 - base) * (cos(pi k / K) + 1) / 2.

    "the exponential moving average parameter tau starts from tau_base and is increased to one
    during training" (Grill et al., 2020). Value k is the momentum of the EMA update after step k
    (0-based); K = total_steps - 1 so the first value is exactly `base` and the last exactly 1.
    """
    if total_steps < 1 or not 0 <= base <= 1:
        raise ValueError(f"need total_steps ({total_steps}) >= 1 and 0 <= base ({base}) <= 1")
    progress = torch.arange(total_steps, dtype=torch.float64) / max(total_steps - 1, 1)
    return 1 - (1 - base) * (torch.cos(math.pi * progress) + 1) / 2
