"""The fused max-pool + ReLU kernel: PyTorch's results bit for bit where it runs, PyTorch's ops
wherever it does not apply, and a clear warning, not a failure, where it cannot be built."""

import re
import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionssl import kernels
from fashionssl.encoders import build_encoder

pytestmark = pytest.mark.usefixtures("single_thread")

FUSED = "_MaxPoolReLUBackward"


@pytest.fixture
def lanes():
    """The kernel's vector width in channels. Skipped only where it cannot exist (no compiler, a CPU
    below AVX2); with a compiler, a failed build fails the tests that need it."""
    if shutil.which(kernels.compiler()) is None or torch.backends.cpu.get_cpu_capability() not in kernels.ISA_FLAGS:
        pytest.skip("no C++ compiler or no AVX2: PyTorch's ops run (tested below)")
    assert kernels.cpu_lanes() is not None, "the kernel did not build: see the warning"
    return kernels.cpu_lanes()


def hard_input(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Random maps with what tells max-pools apart: ties (all-equal windows, zeros), negative
    windows (ReLU zeroes them), and NaNs, alone and several in one window, in the last row and
    column too (an odd map's one-row and one-column windows in ceil mode)."""
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    x[0] = 0
    x[1, :, ::2] = 1.0
    x[-1] = -x[-1].abs()
    x[2, 0, 0, 0] = float("nan")
    x[2, 1, :2, :2] = float("nan")
    x[3, 0, -1, -1] = float("nan")
    x[3, 1, -2:, -1] = float("nan")
    x[4, :, :, -1] = x[4, :, :, -2]
    return x.contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("ceil_mode", [False, True], ids=["floor", "ceil"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(6, 32, 28, 28), (6, 64, 7, 7), (6, 16, 5, 9), (6, 128, 3, 3), (6, 32, 2, 2)])
def test_fused_matches_pytorch_bit_for_bit(lanes, dtype, shape, ceil_mode):
    """Odd sides: floor mode drops the last row and column, ceil mode pools them as windows of one
    row, one column or one pixel (hard_input puts ties and NaNs in those too)."""
    pool = nn.MaxPool2d(2, ceil_mode=ceil_mode)
    x = hard_input(shape, dtype)
    plain, fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, result = F.relu(pool(plain)), kernels.max_pool_relu(pool, fused)
    assert type(result.grad_fn).__name__ == FUSED
    grad = torch.randn_like(expected)
    expected.backward(grad)
    result.backward(grad)
    assert result.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(result.nan_to_num(7.0), expected.nan_to_num(7.0))  # NaN where PyTorch has NaN
    assert torch.equal(fused.grad, plain.grad)


@pytest.mark.parametrize("case", ["channels-first", "channels", "float64", "kernel-3"])
def test_pytorch_runs_where_the_kernel_does_not_apply(case):
    x = torch.randn(4, 3 if case == "channels" else 32, 9, 9, dtype=torch.float64 if case == "float64" else torch.float32)
    if case != "channels-first":
        x = x.contiguous(memory_format=torch.channels_last)
    pool = nn.MaxPool2d(3 if case == "kernel-3" else 2)
    result = kernels.max_pool_relu(pool, x.requires_grad_())
    assert torch.equal(result, F.relu(pool(x)))
    assert type(result.grad_fn).__name__ != FUSED


def test_without_autograd_the_forward_is_pytorchs_too(lanes):
    """Evaluation runs the kernel's forward alone (no graph, no saved codes)."""
    x = torch.randn(4, 32, 9, 9).contiguous(memory_format=torch.channels_last)
    pool = nn.MaxPool2d(2)
    with torch.no_grad():
        result = kernels.max_pool_relu(pool, x)
    assert torch.equal(result, F.relu(pool(x)))


@pytest.mark.parametrize("encoder", ["cnn-bn", "cnn-bn-wide-4x4"])
def test_a_training_step_is_the_same_with_and_without_the_kernel(lanes, monkeypatch, encoder):
    """The whole encoder's step under bf16 autocast (`cnn-bn-wide-4x4`: a ceil-mode last pool):
    every output and gradient identical."""
    def step() -> list[torch.Tensor]:
        torch.manual_seed(0)
        net = build_encoder(encoder, 1, 28).to(memory_format=torch.channels_last)
        images = torch.rand(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(images)
        out.float().square().mean().backward()
        return [out, *(p.grad for p in net.parameters())]

    fused = step()
    monkeypatch.setattr(kernels, "cpu_lanes", lambda: None)
    plain = step()
    assert all(torch.equal(a, b) for a, b in zip(fused, plain, strict=True))


def test_builds_into_an_empty_cache(lanes, tmp_path):
    """(Not loaded: the process has the kernel's operators already.)"""
    library = tmp_path / "fashionssl" / "kernels.so"
    kernels.build(library, torch.backends.cpu.get_cpu_capability())
    assert sorted(p.name for p in library.parent.iterdir()) == ["build.lock", "kernels.so"]  # no scratch left
    assert library.read_bytes()[:4] == b"\x7fELF"


@pytest.mark.parametrize("compiler, words", [("no-such-compiler-here", "no C++ compiler found"), ("false", "the compiler failed")])
def test_a_failed_build_warns_and_pytorch_runs(monkeypatch, tmp_path, compiler, words):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CXX", compiler)
    if torch.backends.cpu.get_cpu_capability() not in kernels.ISA_FLAGS:
        pytest.skip("no AVX2: the kernel is never built")
    kernels.cpu_lanes.cache_clear()
    try:
        with pytest.warns(UserWarning, match=f"could not build its C\\+\\+ max-pool kernel.*{re.escape(words)}.*FASHIONSSL_KERNELS=0"):
            assert kernels.cpu_lanes() is None
    finally:
        kernels.cpu_lanes.cache_clear()
    assert not list((tmp_path / "fashionssl").glob("*.so"))


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("FASHIONSSL_KERNELS", "0")
    kernels.cpu_lanes.cache_clear()
    try:
        assert kernels.cpu_lanes() is None
    finally:
        kernels.cpu_lanes.cache_clear()
