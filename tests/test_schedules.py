"""Tests for fashionssl.schedules.warmup_cosine: known values, shape, monotonicity, bad arguments."""

from __future__ import annotations

import math

import pytest
import torch

from fashionssl.schedules import warmup_cosine


def test_known_values_with_warmup():
    # base 1, 4 warm-up steps, 10 steps in all, final 0: warm-up 1/4, 2/4, 3/4, 1, then a half cosine
    # over 6 steps: 0.5 * (1 + cos(pi * j / 6)) for j = 0..5.
    s = warmup_cosine(1.0, total_steps=10, warmup_steps=4, final=0.0)
    expected = [0.25, 0.5, 0.75, 1.0] + [0.5 * (1 + math.cos(math.pi * j / 6)) for j in range(6)]
    assert s.tolist() == pytest.approx(expected, abs=1e-12)
    # spot values written out: 1, (1 + cos 30deg)/2, 3/4, 1/2, 1/4, (1 - cos 30deg)/2
    assert s[4:].tolist() == pytest.approx([1.0, 0.9330127, 0.75, 0.5, 0.25, 0.0669873], abs=1e-7)


def test_shape_dtype_first_and_warmup_end():
    base, total, warmup, final = 0.4, 50, 8, 0.01
    s = warmup_cosine(base, total, warmup, final)
    assert s.shape == (total,)
    assert s.dtype == torch.float64
    assert s[0].item() == pytest.approx(base / warmup)  # the first step already trains
    assert s[warmup - 1].item() == pytest.approx(base)  # warm-up ends at base ...
    assert s[warmup].item() == pytest.approx(base)  # ... and the cosine starts there
    assert s.max().item() == pytest.approx(base)
    # linear warm-up: equal increments
    torch.testing.assert_close(s[:warmup].diff(), torch.full((warmup - 1,), base / warmup, dtype=torch.float64))


def test_cosine_midpoint_and_end():
    base, total, warmup, final = 2.0, 30, 10, 0.5  # cosine phase of 20 steps, midpoint at step 20
    s = warmup_cosine(base, total, warmup, final)
    assert s[warmup + (total - warmup) // 2].item() == pytest.approx((base + final) / 2)
    # last value: one step short of the end of the half cosine, so just above final
    gap = 0.5 * (base - final) * (1 - math.cos(math.pi / (total - warmup)))
    assert s[-1].item() == pytest.approx(final + gap)
    assert final < s[-1].item() < final + 0.01 * (base - final)


def test_monotone_decreasing_after_warmup():
    s = warmup_cosine(1.0, 100, 10, 0.1)
    assert (s[:10].diff() > 0).all()
    assert (s[10:].diff() < 0).all()
    assert (s >= 0.1).all()


def test_no_warmup():
    s = warmup_cosine(3.0, 5, 0, 0.0)
    assert s.tolist() == pytest.approx([3.0 * 0.5 * (1 + math.cos(math.pi * j / 5)) for j in range(5)])
    assert s[0].item() == 3.0
    assert warmup_cosine(0.7, 1).tolist() == [0.7]


def test_all_warmup():
    s = warmup_cosine(1.0, 4, 4, 0.0)
    assert s.tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])


@pytest.mark.parametrize("total, warmup", [(0, 0), (-3, 0), (10, -1), (10, 11)])
def test_invalid_arguments_raise_value_error(total, warmup):
    with pytest.raises(ValueError):
        warmup_cosine(1.0, total, warmup)
