"""Tests for fashionssl.device: the host memory policy for CPU training (freed memory kept for reuse
instead of fresh, page-faulting pages for every large tensor) and the precision of losses."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from fashionssl import device
from fashionssl.device import _glibc, at_least_float32

# Measured in a fresh interpreter: whatever earlier tests left in this process's heap (free chunks
# already paged in) would otherwise serve the first "default" step without page faults (CI once saw
# [16385, 49155, 49155] for three default steps here).
MEASURE_STEPS = """
import json, resource, torch
from fashionssl.device import keep_freed_host_memory

BLOCK = 64 * 2**20  # bytes: past glibc's largest threshold (32 MB) for handing blocks to the system

def page_faults_of_a_step():
    # three new 64 MB tensors allocated, written once and freed, as a training step does with its
    # largest activations and gradients
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    blocks = [torch.empty(BLOCK, dtype=torch.uint8).fill_(1) for _ in range(3)]
    del blocks
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = [page_faults_of_a_step() for _ in range(3)]  # fresh pages from the system every step
restore = keep_freed_host_memory(torch.device("cpu"))
# The heap grows over the first steps (blocks aligned for SIMD do not fit exactly into the holes
# freed ones leave), then the steps run in memory it already has.
kept = [page_faults_of_a_step() for _ in range(8)]
restore()
after = page_faults_of_a_step()
print(json.dumps({"default": default, "kept": kept, "after": after, "step_pages": 3 * BLOCK // resource.getpagesize()}))
"""


@pytest.mark.skipif(_glibc() is None, reason="the policy is glibc's")
def test_cpu_training_reuses_freed_memory_without_page_faults_and_restores_the_default():
    done = subprocess.run([sys.executable, "-c", MEASURE_STEPS], capture_output=True, text=True, check=True)
    faults = json.loads(done.stdout)
    step_pages = faults["step_pages"]
    assert min(faults["default"]) > step_pages // 2, faults
    assert max(faults["kept"][-2:]) < step_pages // 20, faults
    assert faults["after"] > step_pages // 4, faults


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
