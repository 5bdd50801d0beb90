"""Tests for fashionssl.device: the host memory policy for CPU training (freed memory kept for reuse
instead of fresh, page-faulting pages for every large tensor) and the precision of losses."""

from __future__ import annotations

import resource

import pytest
import torch

from fashionssl import device
from fashionssl.device import _glibc, at_least_float32, keep_freed_host_memory

BLOCK = 64 * 2**20  # bytes: past glibc's largest threshold (32 MB) for handing blocks to the system
STEP_PAGES = 3 * BLOCK // resource.getpagesize()


def page_faults_of_a_step() -> int:
    """Minor page faults taken while three new 64 MB tensors are allocated, written once and freed,
    as a training step does with its largest activations and gradients."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(BLOCK, dtype=torch.uint8).fill_(1) for _ in range(3)]
    del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(_glibc() is None, reason="the policy is glibc's")
def test_cpu_training_reuses_freed_memory_without_page_faults_and_restores_the_default():
    default = [page_faults_of_a_step() for _ in range(3)]  # fresh pages from the system every step
    restore = keep_freed_host_memory(torch.device("cpu"))
    try:
        # The heap grows over the first steps (blocks aligned for SIMD do not fit exactly into the
        # holes freed ones leave), then the steps run in memory it already has.
        kept = [page_faults_of_a_step() for _ in range(8)]
    finally:
        restore()
    after = page_faults_of_a_step()
    assert min(default) > STEP_PAGES // 2, default
    assert max(kept[-2:]) < STEP_PAGES // 20, kept
    assert after > STEP_PAGES // 4, after


def test_the_host_policy_is_left_alone_when_training_on_a_gpu(monkeypatch):
    def no_allocator_changes():
        raise AssertionError("the C library's allocator was asked to change for a GPU run")

    monkeypatch.setattr(device, "_glibc", no_allocator_changes)
    device.keep_freed_host_memory(torch.device("cuda"))()  # needs no GPU: it only decides not to act


def test_losses_compute_in_float32_or_wider():
    assert at_least_float32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_float32(torch.ones(2, dtype=torch.float16)).dtype == torch.float32
    assert at_least_float32(torch.ones(2)).dtype == torch.float32
    assert at_least_float32(torch.ones(2, dtype=torch.float64)).dtype == torch.float64
