"""Tests for the redundancy-reduction methods, Barlow Twins and VICReg (GitHub issue 17): their losses
on hand-computed cases and against plain-loop references, the normalisation conventions, invariances,
the loss at its minimum, option validation, collapse warnings and a forward/backward through
build_model. That 2 processes x 8 images take the steps of 1 process x 16 (the global batch's
statistics, gradients not off by the world size): tests/test_distributed.py (STEP_CASES)."""

from __future__ import annotations

import math

import pytest
import torch

from fashionssl.data import FASHION_MNIST_INFO
from fashionssl.config import Config
from fashionssl.errors import UserError
from fashionssl.losses import barlow_twins_loss, vicreg_loss
from fashionssl.methods import METHODS, build_method, build_model
from fashionssl.encoders import ConvNet
from fashionssl.optim import build_optimizer


pytestmark = pytest.mark.usefixtures("single_thread")

SMALL = {"hidden_dim": 64, "out_dim": 32}  # heads small enough for quick tests


# ---------------------------------------------------------------- plain-loop references (float64)

def columns(z: torch.Tensor) -> list[list[float]]:
    return z.double().T.tolist()  # one list per dimension, over the batch


def reference_barlow(z1: torch.Tensor, z2: torch.Tensor, lam: float, eps: float) -> float:
    """The paper's L = sum_i (1 - C_ii)^2 + lam sum_{i != j} C_ij^2 with loops: each dimension
    standardised over the batch with the biased variance (divide by N) + eps, C_ij = sum_k a_ki b_kj / N."""
    n = len(z1)

    def standardise(col):
        mean = sum(col) / n
        var = sum((x - mean) ** 2 for x in col) / n
        return [(x - mean) / math.sqrt(var + eps) for x in col]

    a = [standardise(c) for c in columns(z1)]
    b = [standardise(c) for c in columns(z2)]
    d = len(a)
    c = [[sum(a[i][k] * b[j][k] for k in range(n)) / n for j in range(d)] for i in range(d)]
    return sum((1 - c[i][i]) ** 2 for i in range(d)) + lam * sum(c[i][j] ** 2 for i in range(d) for j in range(d) if i != j)


def reference_vicreg(z1: torch.Tensor, z2: torch.Tensor, sim: float, std: float, cov: float, eps: float) -> float:
    """The official code's loss with loops: sim * mean over N*D entries of (z1 - z2)^2
    + std * [mean_j relu(1 - sqrt(var_j + eps)) over each view] / 2 + cov * [sum_{i != j} cov_ij^2 / D
    for each view], with the unbiased var and cov (divide by N - 1)."""
    n, d = z1.shape
    mse = sum((x - y) ** 2 for rx, ry in zip(z1.double().tolist(), z2.double().tolist()) for x, y in zip(rx, ry)) / (n * d)

    def terms(z):
        cols = columns(z)
        centred = [[x - sum(col) / n for x in col] for col in cols]
        variance = sum(max(0.0, 1 - math.sqrt(sum(x * x for x in col) / (n - 1) + eps)) for col in centred) / d
        covariance = sum((sum(centred[i][k] * centred[j][k] for k in range(n)) / (n - 1)) ** 2
                         for i in range(d) for j in range(d) if i != j) / d
        return variance, covariance

    (v1, c1), (v2, c2) = terms(z1), terms(z2)
    return sim * mse + std * (v1 + v2) / 2 + cov * (c1 + c2)


# ---------------------------------------------------------------- Barlow Twins loss

# Columns (dimensions) of N = 4 samples, standardised with the BIASED std (divide by N):
#   [3, 1, 3, 1]: mean 2, deviations [1, -1, 1, -1], variance 4/4 = 1          -> p = [1, -1, 1, -1]
#   [5, 5, 1, 1]: mean 3, deviations [2, 2, -2, -2], variance 16/4 = 4, std 2  -> q = [1, 1, -1, -1]
#   [0, 0, 0, 4]: mean 1, deviations [-1, -1, -1, 3], variance 12/4 = 3        -> u = [-1, -1, -1, 3] / sqrt(3)
#   [0, 0, 0, 2] (the same, halved): the same u (standardising removes the scale)
# z1 = [p, u] and z2 = [q, u] (as raw columns); C = a.T @ b / 4:
#   C_00 = p.q / 4 = (1 - 1 - 1 + 1) / 4 = 0
#   C_01 = p.u / 4 = (-1 + 1 - 1 - 3) / (4 sqrt 3) = -1/sqrt(3);  C_10 = u.q / 4 = (-1 - 1 + 1 - 3) / (4 sqrt 3) = -1/sqrt(3)
#   C_11 = u.u / 4 = (1 + 1 + 1 + 9) / (3 * 4) = 1
# L = (1 - 0)^2 + (1 - 1)^2 + lambda (1/3 + 1/3) = 1 + 2 lambda / 3; lambda = 0.5: 4/3.
# With the paper's pseudo-code (`z.std(0)`: torch's UNBIASED std, divide by N - 1 = 3, and C = ... / N)
# each standardised column is sqrt(3/4) times the above and C is 3/4 of it:
# L = 1 + (1 - 3/4)^2 + lambda * 2 * (9/16) / 3 = 1 + 1/16 + 3 lambda / 8; lambda = 0.5: 1.25.
BT_Z1 = torch.tensor([[3.0, 0.0], [1.0, 0.0], [3.0, 0.0], [1.0, 4.0]])
BT_Z2 = torch.tensor([[5.0, 0.0], [5.0, 0.0], [1.0, 0.0], [1.0, 2.0]])


def test_barlow_hand_computed_with_the_biased_std():
    lam = 0.5
    assert barlow_twins_loss(BT_Z1, BT_Z2, lam, eps=0.0).item() == pytest.approx(1 + 2 * lam / 3, rel=1e-6)
    # not the pseudo-code's unbiased convention, whose C_ii could never reach 1
    unbiased = lambda z: (z - z.mean(0)) / z.std(0)  # noqa: E731  (Algorithm 1 of the paper, verbatim)
    c = unbiased(BT_Z1).T @ unbiased(BT_Z2) / 4
    assert c[1, 1].item() == pytest.approx(3 / 4)
    assert ((c.diagonal() - 1) ** 2).sum().item() + lam * (c[0, 1] ** 2 + c[1, 0] ** 2).item() == pytest.approx(1.25)
    # the default eps (1e-5, BatchNorm1d's) barely moves it here (variances 1 to 4)
    assert barlow_twins_loss(BT_Z1, BT_Z2, lam).item() == pytest.approx(4 / 3, rel=1e-4)
    assert barlow_twins_loss(BT_Z1, BT_Z2).item() == pytest.approx(1 + 2 * 5e-3 / 3, rel=1e-4)  # paper's lambda


@pytest.mark.parametrize("lam", [5e-3, 0.1, 1.0])
def test_barlow_matches_loop_reference(lam):
    g = torch.Generator().manual_seed(5)
    z1, z2 = torch.randn(7, 5, generator=g), 2 + 3 * torch.randn(7, 5, generator=g)
    z2[:, 0] += 2 * z1[:, 0]  # some correlation, so the diagonal is not just noise
    assert barlow_twins_loss(z1, z2, lam).item() == pytest.approx(reference_barlow(z1, z2, lam, 1e-5), rel=1e-5)
    assert reference_barlow(BT_Z1, BT_Z2, 0.5, 0.0) == pytest.approx(4 / 3)  # the reference agrees with the hand case


def test_barlow_is_invariant_to_per_dimension_affine_maps_and_sample_order():
    # each dimension of each view standardised over the batch: a positive scale and any shift per
    # dimension change nothing; neither does reordering the pairs (C is a sum over samples)
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(9, 4, generator=g), torch.randn(9, 4, generator=g)
    loss = barlow_twins_loss(z1, z2, 0.3, eps=0.0).item()
    scale1, scale2 = torch.rand(4, generator=g) * 10 + 0.1, torch.rand(4, generator=g) * 10 + 0.1
    shift1, shift2 = 5 * torch.randn(4, generator=g), 5 * torch.randn(4, generator=g)
    assert barlow_twins_loss(z1 * scale1 + shift1, z2 * scale2 + shift2, 0.3, eps=0.0).item() == pytest.approx(loss, rel=1e-5)
    order = torch.randperm(9, generator=g)
    assert barlow_twins_loss(z1[order], z2[order], 0.3, eps=0.0).item() == pytest.approx(loss, rel=1e-5)
    # ... but not to flipping one dimension of one view: its C_ii changes sign
    flipped = z2 * torch.tensor([-1.0, 1.0, 1.0, 1.0])
    assert barlow_twins_loss(z1, flipped, 0.3, eps=0.0).item() != pytest.approx(loss, rel=1e-3)


def test_barlow_is_zero_for_identical_whitened_views():
    # three mutually orthogonal +-1 columns of 4 samples (mean 0, biased std 1): C = I, L = 0 for any lambda,
    # also after a different affine map of each view
    z = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])
    assert barlow_twins_loss(z, z, 1.0, eps=0.0).item() == pytest.approx(0.0, abs=1e-10)
    assert barlow_twins_loss(3 * z - 1, 0.5 * z + 7, 1.0, eps=0.0).item() == pytest.approx(0.0, abs=1e-10)
    assert barlow_twins_loss(z, z, 1.0).item() == pytest.approx(0.0, abs=1e-9)  # with the default eps: ~(1e-5)^2
    # identical but correlated views: the diagonal is 1, only the off-diagonal term is left
    g = torch.Generator().manual_seed(7)
    r = torch.randn(16, 3, generator=g)
    loss = barlow_twins_loss(r, r, 0.2, eps=0.0).item()
    assert loss > 0
    assert loss == pytest.approx(0.2 * reference_barlow(r, r, 1.0, 0.0), rel=1e-5)


def test_barlow_constant_dimension_is_finite_and_fully_penalised():
    # a dimension with no spread: eps keeps it finite, its C_ii is 0, so it costs (1 - 0)^2 = 1
    z = torch.tensor([[1.0, 2.0], [-1.0, 2.0], [1.0, 2.0], [-1.0, 2.0]], requires_grad=True)
    loss = barlow_twins_loss(z, z.detach().clone(), 1.0)
    assert loss.item() == pytest.approx(1.0, rel=1e-4)
    loss.backward()
    assert torch.isfinite(z.grad).all()


# ---------------------------------------------------------------- VICReg loss

# x: columns [1, -1, 1, -1] and [1, 0, 0, -1]; y: columns [0, 0, 0, 0] and [1, 1, -1, -1] (N = 4, D = 2).
# Both centred already. UNBIASED variances (divide by N - 1 = 3), with eps = 0:
#   x: 4/3 (std 2/sqrt3 > 1: hinge 0) and 2/3 (std sqrt(2/3): hinge 1 - sqrt(2/3))  -> mean (1 - sqrt(2/3)) / 2
#   y: 0 (std 0: hinge 1) and 4/3 (hinge 0)                                         -> mean 1/2
#   variance term = mean_x / 2 + mean_y / 2 = (1 - sqrt(2/3)) / 4 + 1/4 = 0.2958758...
# Covariances (x.T @ x / 3 on centred x): x's off-diagonal (1*1 + 0 + 0 + (-1)(-1)) / 3 = 2/3, twice;
#   y's 0 (a zero column)  -> covariance term = 2 * (2/3)^2 / D + 0 = 4/9
# Invariance, the mean over the 8 entries of (x - y)^2: rows (1, 0), (-1, -1), (1, 1), (-1, 0) -> 6/8 = 0.75
# L = 25 * 0.75 + 25 * 0.2958758 + 1 * 4/9 = 18.75 + 7.3968963 + 0.4444444 = 26.5913407
# (With biased variances, /4, x's second std would be sqrt(1/2) and the covariance 1/2: another answer.)
VI_X = torch.tensor([[1.0, 1.0], [-1.0, 0.0], [1.0, 0.0], [-1.0, -1.0]])
VI_Y = torch.tensor([[0.0, 1.0], [0.0, 1.0], [0.0, -1.0], [0.0, -1.0]])
VARIANCE_TERM = (1 - math.sqrt(2 / 3)) / 4 + 1 / 4


def test_vicreg_hand_computed_term_by_term():
    assert VARIANCE_TERM == pytest.approx(0.2958758, abs=1e-7)  # by calculator
    assert vicreg_loss(VI_X, VI_Y, 1.0, 0.0, 0.0, eps=0.0).item() == pytest.approx(0.75, rel=1e-6)
    assert vicreg_loss(VI_X, VI_Y, 0.0, 1.0, 0.0, eps=0.0).item() == pytest.approx(VARIANCE_TERM, rel=1e-6)
    assert vicreg_loss(VI_X, VI_Y, 0.0, 0.0, 1.0, eps=0.0).item() == pytest.approx(4 / 9, rel=1e-6)
    expected = 25 * 0.75 + 25 * VARIANCE_TERM + 4 / 9
    assert expected == pytest.approx(26.5913407, abs=1e-6)
    assert vicreg_loss(VI_X, VI_Y, eps=0.0).item() == pytest.approx(expected, rel=1e-6)
    # the default eps (1e-4, inside the square root): y's zero column has std sqrt(1e-4) = 0.01, hinge 0.99
    with_eps = 25 * 0.75 + 25 * ((1 - math.sqrt(2 / 3 + 1e-4)) / 4 + 0.99 / 4) + 4 / 9
    assert vicreg_loss(VI_X, VI_Y).item() == pytest.approx(with_eps, rel=1e-6)


@pytest.mark.parametrize("coeffs", [(25.0, 25.0, 1.0), (1.0, 0.5, 2.0)])
def test_vicreg_matches_loop_reference(coeffs):
    g = torch.Generator().manual_seed(8)
    z1 = torch.randn(7, 5, generator=g) * torch.tensor([0.2, 0.5, 1.0, 2.0, 3.0])  # some dimensions below std 1
    z2 = z1 + 0.3 * torch.randn(7, 5, generator=g)
    z2[:, 1] += z2[:, 0]  # a correlated pair
    assert vicreg_loss(z1, z2, *coeffs).item() == pytest.approx(reference_vicreg(z1, z2, *coeffs, 1e-4), rel=1e-5)
    assert reference_vicreg(VI_X, VI_Y, 25, 25, 1, 0.0) == pytest.approx(26.5913407, abs=1e-6)  # agrees with the hand case


def test_vicreg_is_zero_for_identical_spread_out_decorrelated_views():
    # orthogonal +-2 columns: unbiased std 4/sqrt3 > 1 (hinge 0), covariance 0, views equal (MSE 0)
    z = 2 * torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0], [1.0, -1.0, -1.0], [-1.0, -1.0, 1.0]])
    assert vicreg_loss(z, z).item() == pytest.approx(0.0, abs=1e-7)
    # a common shift of both views changes nothing (statistics are centred, the difference is unchanged)
    g = torch.Generator().manual_seed(9)
    z1, z2 = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    shift = 10 * torch.randn(4, generator=g)
    assert vicreg_loss(z1 + shift, z2 + shift).item() == pytest.approx(vicreg_loss(z1, z2).item(), rel=1e-5)
    # collapse to one point: MSE and covariance 0, every hinge at 1 - sqrt(eps): the variance term is ~std_coeff
    point = torch.ones(6, 4)
    assert vicreg_loss(point, point).item() == pytest.approx(25 * (1 - math.sqrt(1e-4)), rel=1e-6)


def test_losses_compute_in_float32_from_bfloat16():
    g = torch.Generator().manual_seed(10)
    z1, z2 = torch.randn(16, 8, generator=g), torch.randn(16, 8, generator=g)
    for loss in (barlow_twins_loss, vicreg_loss):
        low = loss(z1.bfloat16(), z2.bfloat16())
        assert low.dtype == torch.float32
        assert low.item() == pytest.approx(loss(z1.bfloat16().float(), z2.bfloat16().float()).item(), rel=1e-6)


# ---------------------------------------------------------------- the methods

def make(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_method(name, ConvNet(batch_norm=True, fc_dim=None), options)


def random_views(n: int = 12, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, 1, 28, 28, generator=g) for _ in range(2)]


def test_registered_with_the_chosen_defaults():
    assert METHODS["barlow"].__name__ == "BarlowTwins" and METHODS["vicreg"].__name__ == "VICReg"
    barlow, vicreg = make("barlow"), make("vicreg")
    assert barlow.lambda_offdiag == 0.04  # the paper's 5e-3 x 8192 / 1024, chosen on validation (barlow.py)
    assert (vicreg.sim_coeff, vicreg.std_coeff, vicreg.cov_coeff) == (25.0, 25.0, 1.0)
    for model, head in ((barlow, barlow.projector), (vicreg, vicreg.expander)):
        linears = [m for m in head if isinstance(m, torch.nn.Linear)]
        norms = [m for m in head if isinstance(m, torch.nn.BatchNorm1d)]
        assert [(m.in_features, m.out_features) for m in linears] == [(1152, 1024), (1024, 1024), (1024, 1024)]
        assert len(norms) == 2  # Linear-BN-ReLU twice, then Linear: 3 layers
        assert model.needs_sync_batchnorm and model.view_spec.global_views == 2 and not model.uses_labels


@pytest.mark.parametrize("name, option, value", [
    ("barlow", "lambda_offdiag", -0.1), ("barlow", "lambda_offdiag", "0.005"), ("barlow", "lambda_offdiag", float("inf")),
    ("barlow", "hidden_dim", 0), ("barlow", "out_dim", 2.5), ("barlow", "out_dim", True),
    ("vicreg", "sim_coeff", -1), ("vicreg", "std_coeff", float("nan")), ("vicreg", "cov_coeff", None),
    ("vicreg", "hidden_dim", -3), ("vicreg", "out_dim", "wide"),
])
def test_bad_options_are_user_errors_naming_the_option(name, option, value):
    with pytest.raises(UserError, match=f"{name} option {option} must be"):
        make(name, **{option: value})


@pytest.mark.parametrize("name", ["barlow", "vicreg"])
def test_unknown_option_is_a_user_error(name):
    with pytest.raises(UserError, match="unknown option"):
        make(name, lambd=0.1)


@pytest.mark.parametrize("name, log", [("barlow", "collapse_std"), ("vicreg", "embedding_std")])
def test_forward_backward_through_build_model(name, log):
    model = build_model(Config(method=name, method_options=SMALL, encoder="cnn-bn"), FASHION_MNIST_INFO)
    views = random_views()
    loss, logs = model(views, torch.zeros(12, dtype=torch.long))
    assert loss.dim() == 0 and torch.isfinite(loss) and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    assert set(logs) == {log} and logs[log].dim() == 0 and not logs[log].requires_grad and logs[log] > 0
    # the loss is the pure loss of the head's outputs for the two views (eval: BatchNorm on running stats)
    model.eval()
    with torch.no_grad():
        loss, logs = model(views, None)
        z = (model.projector if name == "barlow" else model.expander)(model.backbone(torch.cat(views)))
        if name == "barlow":  # the paper's loss per dimension (out_dim 32), at the method's lambda
            expected = barlow_twins_loss(z[:12], z[12:], model.lambda_offdiag) / 32
        else:
            expected = vicreg_loss(z[:12], z[12:])
        torch.testing.assert_close(loss, expected)
        if name == "vicreg":
            torch.testing.assert_close(logs[log], (z[:12].std(0).mean() + z[12:].std(0).mean()) / 2)


@pytest.mark.parametrize("name, options", [("barlow", {"lambda_offdiag": 0.05}), ("vicreg", {})])
def test_a_few_steps_lower_the_loss_on_a_fixed_batch(name, options):
    model = make(name, **SMALL, **options)
    optimizer = build_optimizer("sgd", model, 0.05, 0.0)
    views = random_views(n=32)
    losses = []
    for _ in range(5):
        loss, _ = model(views, None)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


def test_collapse_warnings():
    barlow = make("barlow", out_dim=64)  # healthy 1/8, warning below 0.2/8 = 0.025
    assert barlow.epoch_warnings({"epoch_collapse_std": 0.1}) == [] and barlow.epoch_warnings({}) == []
    (warning,) = barlow.epoch_warnings({"epoch_collapse_std": 0.01})
    assert "barlow is collapsing" in warning and "0.0100" in warning and "lambda_offdiag" in warning
    vicreg = make("vicreg", **SMALL)
    assert vicreg.epoch_warnings({"epoch_embedding_std": 1.0}) == [] and vicreg.epoch_warnings({}) == []
    assert vicreg.epoch_warnings({"epoch_embedding_std": 0.3}) == []  # about the value at initialisation
    (warning,) = vicreg.epoch_warnings({"epoch_embedding_std": 0.02})
    assert "vicreg is collapsing" in warning and "0.0200" in warning and "std_coeff" in warning
