"""Tests for fashionssl.optim: parameter groups (no decay on 1-d params), names, and LARS steps
computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fashionssl.errors import UserError
from fashionssl.optim import LARS, OPTIMIZERS, build_optimizer


pytestmark = pytest.mark.usefixtures("single_thread")


def small_model() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2, 3), nn.LayerNorm(3))


@pytest.mark.parametrize("name", ["adamw", "sgd", "lars"])
def test_groups_split_by_ndim(name):
    model = small_model()
    conv, bn, linear, ln = model[0], model[1], model[3], model[4]
    frozen = ln.bias.requires_grad_(False)
    opt = build_optimizer(name, model, lr=0.05, weight_decay=0.3)
    decayed = [g for g in opt.param_groups if g["weight_decay"] > 0]
    undecayed = [g for g in opt.param_groups if g["weight_decay"] == 0]
    assert len(decayed) == 1 and len(undecayed) == 1
    assert decayed[0]["weight_decay"] == 0.3
    assert {id(p) for p in decayed[0]["params"]} == {id(conv.weight), id(linear.weight)}
    assert {id(p) for p in undecayed[0]["params"]} == {id(conv.bias), id(bn.weight), id(bn.bias), id(linear.bias),
                                                       id(ln.weight)}
    assert all(p is not frozen for g in opt.param_groups for p in g["params"])  # frozen params left out
    assert all(g["lr"] == 0.05 for g in opt.param_groups)


def test_kinds():
    model = small_model()
    assert isinstance(build_optimizer("adamw", model, 0.1, 0.0), torch.optim.AdamW)
    sgd = build_optimizer("sgd", model, 0.1, 0.0)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    assert isinstance(build_optimizer("lars", model, 0.1, 0.0), LARS)


def test_adamw_decays_weights_but_not_biases():
    # With a zero gradient Adam's step is 0, so only the decoupled decay moves params: w *= 1 - lr * wd.
    layer = nn.Linear(2, 2)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    opt = build_optimizer("adamw", layer, lr=0.1, weight_decay=0.5)
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    torch.testing.assert_close(layer.weight.detach(), w0 * (1 - 0.1 * 0.5))
    torch.testing.assert_close(layer.bias.detach(), b0)


def test_unknown_name_lists_choices():
    with pytest.raises(UserError) as info:
        build_optimizer("adam", small_model(), 0.1, 0.0)
    message = str(info.value)
    assert "'adam'" in message
    for name in OPTIMIZERS:
        assert name in message


def test_lars_weight_two_steps_by_hand():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))  # ||w|| = 5
    lr, wd, eta, mom = 0.5, 0.1, 0.02, 0.9
    opt = LARS([w], lr=lr, momentum=mom, weight_decay=wd, eta=eta)
    grad = [0.9, -0.9]  # not parallel to w, so dropping the decay term would change the direction

    # step 1: u = g + wd w = (1.2, -0.5), ||u|| = 1.3; trust = 0.02 * 5 / 1.3 = 1/13;
    # buf = u / 13; w -= 0.5 * buf -> (3 - 0.6/13, 4 + 0.25/13)
    w.grad = torch.tensor([grad], dtype=torch.float64)
    opt.step()
    p = [3 - 0.6 / 13, 4 + 0.25 / 13]
    assert w.detach().tolist() == [pytest.approx(p, abs=1e-12)]
    buf = [1.2 / 13, -0.5 / 13]

    # step 2, same gradient, written out with plain floats
    u = [g + wd * x for g, x in zip(grad, p)]
    trust = eta * math.hypot(*p) / math.hypot(*u)
    buf = [mom * b + trust * x for b, x in zip(buf, u)]
    expected = [x - lr * b for x, b in zip(p, buf)]
    w.grad = torch.tensor([grad], dtype=torch.float64)
    opt.step()
    assert w.detach().tolist() == [pytest.approx(expected, abs=1e-12)]
    assert opt.state[w]["momentum_buffer"].tolist() == [pytest.approx(buf, abs=1e-12)]


def test_lars_bias_is_plain_sgd_momentum():
    # 1-d params: no weight decay (even if the group has one), no trust ratio.
    b = nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
    opt = LARS([b], lr=0.1, momentum=0.9, weight_decay=0.1, eta=0.02)
    g = torch.tensor([0.5, -1.0], dtype=torch.float64)
    b.grad = g.clone()
    opt.step()  # buf = g; b -= 0.1 g
    assert b.detach().tolist() == pytest.approx([0.95, 2.1], abs=1e-12)
    b.grad = g.clone()
    opt.step()  # buf = 0.9 g + g = 1.9 g; b -= 0.19 g
    assert b.detach().tolist() == pytest.approx([0.95 - 0.095, 2.1 + 0.19], abs=1e-12)


def test_lars_zero_weight_uses_trust_one():
    w = nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.5, eta=0.001)
    w.grad = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(w.detach(), -0.1 * w.grad)
    assert torch.isfinite(w).all()


def test_lars_zero_grad_and_no_decay_leaves_weight():
    w = nn.Parameter(torch.ones(2, 2))
    opt = LARS([w], lr=0.1, weight_decay=0.0)
    w.grad = torch.zeros(2, 2)
    opt.step()
    torch.testing.assert_close(w.detach(), torch.ones(2, 2))


def test_lars_skips_params_without_grad():
    a, b = nn.Parameter(torch.ones(2, 2)), nn.Parameter(torch.ones(2))
    opt = LARS([a, b], lr=0.1)
    b.grad = torch.ones(2)
    opt.step()
    torch.testing.assert_close(a.detach(), torch.ones(2, 2))
    assert a not in opt.state


def test_build_lars_uses_group_weight_decay():
    layer = nn.Linear(2, 1)
    opt = build_optimizer("lars", layer, lr=1.0, weight_decay=0.5)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[3.0, 4.0]]))
    layer.weight.grad = torch.zeros(1, 2)
    layer.bias.grad = torch.zeros(1)
    b0 = layer.bias.detach().clone()
    opt.step()
    # u = 0.5 w, trust = 0.001 * 5 / 2.5 = 0.002 -> w -= 1.0 * 0.002 * 0.5 w = 0.001 w
    torch.testing.assert_close(layer.weight.detach(), torch.tensor([[3.0, 4.0]]) * 0.999)
    torch.testing.assert_close(layer.bias.detach(), b0)
