"""torchrun helpers: joining the process group, who am I, the global batch for losses that need it,
BatchNorm over the global batch, and decisions that rank 0 takes for everyone.

Every function works unchanged in a single process (world size 1), so methods call them
unconditionally and the same code is the single- and multi-process path.

Conventions (what makes W processes with B images each equal one process with W*B): the global
batch is the concatenation of the ranks' shards in rank order; a method's loss on each rank is its
share of the global loss, such that the mean over ranks is the global loss (a per-sample mean over
the rank's own samples, with negatives or statistics gathered from all ranks where they are needed);
DDP then averages the gradients, and the gradient that `gather_with_grad` and `SyncBatchNorm` send
back to each rank's slice carries every rank's loss.
"""

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from .device import at_least_float32
from .errors import UserError

T = TypeVar("T")

TIMEOUT_ENV = "FASHIONSSL_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0  # longest a rank waits in a collective (e.g. while rank 0 runs the kNN monitor)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def local_rank() -> int:
    """This process's index on its machine (torchrun's LOCAL_RANK): which GPU it uses."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process group (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR...)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def collective_timeout() -> datetime.timedelta:
    """How long a collective may wait for the other ranks before failing: $FASHIONSSL_DIST_TIMEOUT
    seconds, default 600. A rank that died mid-step otherwise leaves the others waiting for ever
    where no launcher notices (the other nodes of a multi-node job)."""
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise UserError(f"${TIMEOUT_ENV} must be a positive number of seconds, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


@contextlib.contextmanager
def torchrun_process_group() -> Iterator[None]:
    """Join the process group that torchrun describes in the environment, for the duration; a no-op
    when not launched by torchrun or when a group exists already (a test or a script made one).

    Backends: gloo for CPU tensors, NCCL for CUDA ones where a GPU exists (each process then uses
    cuda:LOCAL_RANK). Collectives time out after `collective_timeout()`.
    """
    if is_distributed() or not launched_by_torchrun():
        yield
        return
    timeout = collective_timeout()
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend, timeout=timeout)
    try:
        yield
        dist.barrier()  # every rank is done with its collectives before any tears its connections down
    finally:
        dist.destroy_process_group()


def process_device(device: torch.device) -> torch.device:
    """The device this process trains on: with several processes on CUDA, cuda:LOCAL_RANK."""
    if device.type != "cuda" or world_size() == 1:
        return device
    if device.index is not None and device.index != local_rank():
        raise UserError(f"--device {device} with torchrun: each process uses the GPU of its LOCAL_RANK; "
                        f"pass --device cuda (or auto) and choose GPUs with CUDA_VISIBLE_DEVICES")
    return torch.device("cuda", local_rank())


def shard_batches(order: torch.Tensor, batch_size: int) -> torch.Tensor:
    """This rank's shard of every global batch of `order`, back to back: global batch i is
    order[i*batch_size:(i+1)*batch_size] and rank r takes its r-th slice of batch_size/W, so that
    result[i*b:(i+1)*b] (b = batch_size/W) is this rank's part of batch i. The global batches, and
    thus the data order, are the same for any number of processes. An incomplete last batch is dropped."""
    steps = len(order) // batch_size
    return order[:steps * batch_size].view(steps, world_size(), -1)[:, rank()].reshape(-1)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward sums every rank's gradient for the whole result and hands each
    rank its own slice. Plain collectives only: torch.distributed.nn's differentiable ones are
    deprecated in torch 2.13, and their replacement is private."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rows = len(x)
        return gather(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = all_reduce_sum(grad.contiguous().clone())
        return grad[rank() * ctx.rows:(rank() + 1) * ctx.rows]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every rank along dim 0, rank order, keeping the autograd graph: the
    gradient reaching another rank's slice flows back to that rank, carrying every rank's loss.
    Contrastive negatives from the whole global batch need this; a plain all_gather would cut the
    graph (a known peer bug). Every rank must pass the same shape."""
    if world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


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


@torch.no_grad()
def mean_over_ranks(x: torch.Tensor) -> torch.Tensor:
    """The mean of `x` over ranks (a new tensor): the global loss from each rank's share, for logging."""
    return all_reduce_sum(x.detach().clone()) / world_size()


def main_process_decides(decide: Callable[[], T]) -> T:
    """Run `decide` on rank 0 only and return its result on every rank; a UserError it raises is
    raised on every rank. For what must be decided once: the run directory (its default name holds
    the time), the checkpoint to resume from (only rank 0 needs the file system)."""
    outcome: list[Any] = [None]
    if is_main_process():
        try:
            outcome[0] = ("ok", decide())
        except UserError as e:
            outcome[0] = ("error", str(e))
    if world_size() > 1:
        dist.broadcast_object_list(outcome, src=0)
    status, value = outcome[0]
    if status == "error":
        raise UserError(value)
    return value


def combine_moments(counts: torch.Tensor, means: torch.Tensor,
                    m2s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total count, mean, biased variance) of the union of W groups, from each group's count (W,),
    mean (W, C) and sum of squared deviations from its own mean (W, C) (Chan, Golub and LeVeque, 1979):
    M2 = sum of M2_w + sum of n_w (mean_w - mean)^2.

    Unlike E[x^2] - E[x]^2 from plain sums, no large terms cancel: where a channel's mean is large
    against its spread that formula loses most of float32's digits. It did in SyncBatchNorm: in
    float32, two processes' MoCo weights after two steps differed from one process's by up to 6.4e-5
    with it, and by 4.7e-7 with this one (in float64 they agree to 1e-14 either way).
    """
    n = counts.sum()
    weights = counts[:, None]
    mean = (weights * means).sum(0) / n
    m2 = m2s.sum(0) + (weights * (means - mean).square()).sum(0)
    return n, mean, m2 / n


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch, on any device (PyTorch's
    own SyncBatchNorm runs on GPUs only). Same parameters and buffers as BatchNorm1d/2d, so
    checkpoints move freely between single- and multi-process runs; in eval mode, or in one process,
    it is plain BatchNorm.

    Per channel, one differentiable all-gather of each rank's (count, mean, sum of squared deviations
    from its mean), combined by `combine_moments`, so the gradient through the statistics reaches
    every rank, as it does through the one big batch of a single process.
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected (N, C, ...) input, got {x.dim()}-d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        channels = x.shape[1]
        dims = [0, *range(2, x.dim())]
        shape = [1, channels] + [1] * (x.dim() - 2)
        xf = at_least_float32(x)
        count = torch.full((1,), x.numel() / channels, dtype=xf.dtype, device=x.device)
        local_mean = xf.mean(dims)
        local_m2 = (xf - local_mean.view(shape)).square().sum(dims)
        stats = gather_with_grad(torch.cat([count, local_mean, local_m2])[None])  # (W, 1 + 2C)
        n, mean, var = combine_moments(stats[:, 0], stats[:, 1:channels + 1], stats[:, channels + 1:])
        if self.track_running_stats:
            self._update_running_stats(mean.detach(), var.detach() * n / (n - 1).clamp_min(1))
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
        """What BatchNorm does in training: count the batch, move the running mean and (unbiased)
        variance towards the batch's by `momentum` (None: the cumulative average)."""
        self.num_batches_tracked.add_(1)
        factor = 1 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_var.to(self.running_var.dtype), factor)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm replaced in place by SyncBatchNorm holding the same parameters
    and buffers (the whole model: the EMA key/target networks of MoCo and BYOL too)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, SyncBatchNorm):
            state = child.state_dict()
            synced = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            synced.to(next(iter(state.values())).device).load_state_dict(state)
            synced.train(child.training)
            synced.requires_grad_(any(p.requires_grad for p in child.parameters()))
            setattr(module, name, synced)
        else:
            sync_batchnorm(child)
    return module
