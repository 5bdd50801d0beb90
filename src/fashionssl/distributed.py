"""torchrun helpers: who am I, and the global batch for losses that need it.

Every function works unchanged in a single process (world size 1), so methods call them
unconditionally and the same code is the single- and multi-process path.
"""

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def is_main_process() -> bool:
    return rank() == 0


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0, rank order, keeping the autograd graph: the
    gradient reaching another rank's slice flows back to that rank. Contrastive negatives from the
    whole global batch need this; a plain all_gather would cut the graph (a known peer bug)."""
    if world_size() == 1:
        return x
    return torch.cat(torch.distributed.nn.functional.all_gather(x), dim=0)


@torch.no_grad()
def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0 without gradients (queues, centres, Sinkhorn)."""
    if world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum `x` over ranks in place and return it (identity in one process)."""
    if world_size() > 1:
        dist.all_reduce(x)
    return x
