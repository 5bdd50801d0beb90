"""Tests for fashionssl.losses.nt_xent and its multi-view, debiased and decoupled forms: a hand-computed
case, slow loop references in float64, closed forms, invariances, the temperature limit, gradients
and bf16 inputs."""

from __future__ import annotations

import math

import pytest
import torch

from fashionssl.losses import debiased_nt_xent, decoupled_nt_xent, multi_view_nt_xent, nt_xent


pytestmark = pytest.mark.usefixtures("single_thread")


def reference_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """SimCLR's loss written out with Python loops in float64: for each of the 2N anchors i with
    positive p(i), -log(exp(s_ip / t) / sum_{k != i} exp(s_ik / t)), averaged over the 2N anchors."""
    z = [[c / math.sqrt(sum(x * x for x in v)) for c in v] for v in z1.tolist() + z2.tolist()]
    n = len(z1)

    def sim(a, b):
        return sum(x * y for x, y in zip(z[a], z[b]))

    total = 0.0
    for i in range(2 * n):
        p = i + n if i < n else i - n
        denominator = sum(math.exp(sim(i, k) / t) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(sim(i, p) / t) / denominator)
    return total / (2 * n)


def cross_view_only(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """The seed blog's variant: anchor z1_i against z2_j only (1 positive, N-1 negatives), symmetrised."""
    a = torch.nn.functional.normalize(z1.double(), dim=1)
    b = torch.nn.functional.normalize(z2.double(), dim=1)
    logits = a @ b.T / t
    targets = torch.arange(len(a))
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, targets) + ce(logits.T, targets)).item()


# z1 = [a, b], z2 = [c, d] with a = (1, 0), b = (0, 1), c = (1, 1)/sqrt2 (given unnormalised), d = (0, 1)
# (given as (0, 2)). Positives: a <-> c, b <-> d.
Z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
Z2 = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
R = 1 / math.sqrt(2)
# Cosine similarity matrix of [a, b, c, d], written out by hand.
COSINE = [
    [1, 0, R, 0],
    [0, 1, R, 1],
    [R, R, 1, R],
    [0, 1, R, 1],
]


def test_hand_computed_two_pairs():
    # check the hand-written cosine matrix really is that of the inputs
    z = torch.nn.functional.normalize(torch.cat([Z1, Z2]), dim=1)
    torch.testing.assert_close(z @ z.T, torch.tensor(COSINE, dtype=torch.float32))

    t = 0.5
    e = math.exp
    # anchor a: positive c (R), negatives b (0) and d (0)
    loss_a = -math.log(e(R / t) / (e(0 / t) + e(R / t) + e(0 / t)))
    # anchor b: positive d (1), negatives a (0) and c (R)
    loss_b = -math.log(e(1 / t) / (e(0 / t) + e(R / t) + e(1 / t)))
    # anchor c: positive a (R), negatives b (R) and d (R): three equal terms -> log 3
    loss_c = -math.log(e(R / t) / (3 * e(R / t)))
    assert loss_c == pytest.approx(math.log(3))
    # anchor d: positive b (1), negatives a (0) and c (R): same as b
    loss_d = loss_b
    expected = (loss_a + loss_b + loss_c + loss_d) / 4
    # 0.3962 + 0.5259 + 1.0986 + 0.5259 over 4, by calculator, to guard the algebra above
    assert expected == pytest.approx(0.63667, abs=1e-4)
    assert nt_xent(Z1, Z2, temperature=t).item() == pytest.approx(expected, rel=1e-5)


def test_single_pair_has_no_negatives_and_zero_loss():
    # N = 1: each anchor's only candidate is its positive, so the softmax is 1 and the loss 0.
    z1, z2 = torch.randn(1, 4), torch.randn(1, 4)
    assert nt_xent(z1, z2, 0.3).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0, 2.0])
def test_matches_slow_reference_with_all_negatives(temperature):
    g = torch.Generator().manual_seed(int(temperature * 1000))
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(reference_nt_xent(z1, z2, temperature), rel=1e-5)


def test_reference_agrees_with_hand_case():
    # the loop reference itself is checked against the hand-computed value
    assert reference_nt_xent(Z1, Z2, 0.5) == pytest.approx(nt_xent(Z1, Z2, 0.5).item(), rel=1e-5)
    assert reference_nt_xent(Z1, Z2, 0.5) == pytest.approx(0.63667, abs=1e-4)


def test_differs_from_cross_view_only_negatives():
    # The seed blog's loss ignores the N-1 same-view negatives; on the hand case that changes the value a lot.
    ours = nt_xent(Z1, Z2, 0.5).item()
    blog = cross_view_only(Z1, Z2, 0.5)
    assert abs(ours - blog) > 0.1
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert abs(nt_xent(z1, z2, 0.2).item() - cross_view_only(z1, z2, 0.2)) > 0.1


def test_symmetric_in_views():
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    torch.testing.assert_close(nt_xent(z1, z2, 0.2), nt_xent(z2, z1, 0.2))


def test_invariant_to_scaling_embeddings():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    scales = torch.rand(6, 1, generator=g) * 10 + 0.1  # a different positive scale per row
    torch.testing.assert_close(nt_xent(z1 * scales, z2 * 3.0, 0.2), nt_xent(z1, z2, 0.2))


def test_pairing_matters_but_joint_permutation_does_not():
    g = torch.Generator().manual_seed(4)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    # permuting both views the same way relabels the pairs: same loss
    torch.testing.assert_close(nt_xent(z1[perm], z2[perm], 0.2), nt_xent(z1, z2, 0.2))
    # permuting one view breaks the pairs: different loss
    assert abs(nt_xent(z1, z2[perm], 0.2).item() - nt_xent(z1, z2, 0.2).item()) > 1e-3


def test_aligned_separated_embeddings_loss_goes_to_zero_with_temperature():
    # z1 = z2 = three orthogonal unit vectors: positive similarity 1, all 4 negatives 0, so each
    # anchor's loss is log(1 + 4 exp(-1/t)).
    z = torch.eye(3)
    temperatures = [2.0, 1.0, 0.5, 0.2, 0.1, 0.05]
    losses = [nt_xent(z, z.clone(), t).item() for t in temperatures]
    for t, loss in zip(temperatures, losses):
        assert loss == pytest.approx(math.log1p(4 * math.exp(-1 / t)), rel=1e-4, abs=1e-7)
    assert all(a > b for a, b in zip(losses, losses[1:]))
    assert losses[-1] < 1e-7


def test_gradient_reaches_both_inputs():
    g = torch.Generator().manual_seed(5)
    z1 = torch.randn(4, 3, generator=g, requires_grad=True)
    z2 = torch.randn(4, 3, generator=g, requires_grad=True)
    nt_xent(z1, z2, 0.2).backward()
    for grad in (z1.grad, z2.grad):
        assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 1e-3


def test_gradient_matches_finite_differences():
    g = torch.Generator().manual_seed(6)
    z1 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    # nt_xent computes in float32 (it calls .float()); check the analytic gradient numerically.
    nt_xent(z1, z2, 0.5).backward()
    eps = 1e-3
    with torch.no_grad():
        for z, grad in ((z1, z1.grad), (z2, z2.grad)):
            for idx in [(0, 0), (1, 2), (2, 3)]:
                old = z[idx].item()
                z[idx] = old + eps
                up = nt_xent(z1, z2, 0.5).item()
                z[idx] = old - eps
                down = nt_xent(z1, z2, 0.5).item()
                z[idx] = old
                assert grad[idx].item() == pytest.approx((up - down) / (2 * eps), abs=2e-3)


def test_bf16_inputs_give_float32_loss_close_to_fp32():
    g = torch.Generator().manual_seed(7)
    z1, z2 = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    loss16 = nt_xent(z1.bfloat16(), z2.bfloat16(), 0.2)
    assert loss16.dtype == torch.float32
    # computed in fp32 from the rounded inputs ...
    torch.testing.assert_close(loss16, nt_xent(z1.bfloat16().float(), z2.bfloat16().float(), 0.2))
    # ... so close to the fp32 loss (bf16 keeps ~3 significant digits)
    assert loss16.item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=2e-2)


# --- multi-view NT-Xent (SimCLR with multi-crop) -----------------------------------------------

def reference_multi_view(views: list[torch.Tensor], t: float) -> float:
    """The multi-positive loss written out with Python loops in float64: anchor (a, i) against every
    other of the V*N embeddings; its loss is the mean over the other V-1 views of image i of
    -log(exp(s / t) / sum_{k != anchor} exp(s_k / t)); the result is the mean over the V*N anchors."""
    v, n = len(views), len(views[0])
    z = [[c / math.sqrt(sum(x * x for x in row)) for c in row] for view in views for row in view.tolist()]

    def sim(p, q):
        return sum(x * y for x, y in zip(z[p], z[q]))

    total = 0.0
    for anchor in range(v * n):
        denominator = sum(math.exp(sim(anchor, k) / t) for k in range(v * n) if k != anchor)
        positives = [b * n + anchor % n for b in range(v) if b != anchor // n]
        total += sum(-math.log(math.exp(sim(anchor, p) / t) / denominator) for p in positives) / len(positives)
    return total / (v * n)


@pytest.mark.parametrize("v", [2, 3, 5])
def test_multi_view_matches_the_loop_reference(v):
    torch.manual_seed(v)
    views = [torch.randn(6, 8, dtype=torch.float64) for _ in range(v)]
    assert multi_view_nt_xent(views, 0.3).item() == pytest.approx(reference_multi_view(views, 0.3), rel=1e-9)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("v, n, t", [(3, 4, 0.5), (6, 3, 0.2)])
def test_multi_view_of_identical_views_of_orthogonal_images(v, n, t, autocast):
    """Every view of image i is e_i: each anchor has V-1 positives at similarity 1 and V(N-1)
    negatives at 0, so its loss is log(V - 1 + V(N - 1) exp(-1/t)) (closed form). The similarities
    are exact in bf16 too, so under autocast only a bf16 softmax could miss (by about 1e-3)."""
    views = [torch.eye(n, 8) for _ in range(v)]
    expected = math.log(v - 1 + v * (n - 1) * math.exp(-1 / t))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = multi_view_nt_xent(views, t)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected, rel=1e-6)


def test_multi_view_swapping_views_of_one_image_changes_nothing_but_mixing_images_does():
    torch.manual_seed(1)
    views = [torch.randn(5, 4) for _ in range(3)]
    base = multi_view_nt_xent(views, 0.2)
    torch.testing.assert_close(multi_view_nt_xent(views[::-1], 0.2), base)  # the views' order is immaterial
    mixed = [views[0], views[1], views[2][torch.tensor([1, 0, 2, 3, 4])]]
    assert abs(multi_view_nt_xent(mixed, 0.2).item() - base.item()) > 1e-3


def reference_debiased(views: list[torch.Tensor], t: float, prior: float) -> float:
    """Chuang et al.'s debiased loss written out with Python loops in float64: for each anchor and
    each of its positives p, Ng = max((mean over the M negatives of exp(s / t) - prior exp(s_p / t))
    / (1 - prior), exp(-1 / t)) and the loss -log(exp(s_p / t) / (exp(s_p / t) + M Ng)); the mean
    over every (anchor, positive) pair."""
    v, n = len(views), len(views[0])
    z = [[c / math.sqrt(sum(x * x for x in row)) for c in row] for view in views for row in view.tolist()]

    def e(p, q):
        return math.exp(sum(x * y for x, y in zip(z[p], z[q])) / t)

    losses = []
    for anchor in range(v * n):
        negatives = [k for k in range(v * n) if k % n != anchor % n]
        mean_negative = sum(e(anchor, k) for k in negatives) / len(negatives)
        for p in (b * n + anchor % n for b in range(v) if b != anchor // n):
            ng = max((mean_negative - prior * e(anchor, p)) / (1 - prior), math.exp(-1 / t))
            losses.append(-math.log(e(anchor, p) / (e(anchor, p) + len(negatives) * ng)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("v, t, prior", [(2, 0.3, 0.1), (2, 0.5, 0.3), (3, 0.2, 0.1), (4, 0.3, 0.05)])
def test_debiased_matches_the_loop_reference(v, t, prior):
    torch.manual_seed(v)
    views = [torch.randn(6, 8, dtype=torch.float64) for _ in range(v)]
    assert debiased_nt_xent(views, t, prior).item() == pytest.approx(reference_debiased(views, t, prior), rel=1e-9)


def test_debiased_without_a_prior_is_nt_xent_for_two_views():
    torch.manual_seed(0)
    z1, z2 = torch.randn(16, 8), torch.randn(16, 8)
    torch.testing.assert_close(debiased_nt_xent([z1, z2], 0.2, 0.0), nt_xent(z1, z2, 0.2))


def test_debiasing_lowers_the_loss_of_negatives_that_are_close():
    """A prior > 0 subtracts part of the positive's weight from the negatives' estimate: the loss
    of the same embeddings can only drop, and drops more as the prior grows."""
    torch.manual_seed(2)
    views = [torch.randn(32, 8) for _ in range(2)]
    losses = [debiased_nt_xent(views, 0.5, prior).item() for prior in (0.0, 0.05, 0.1, 0.2)]
    assert losses == sorted(losses, reverse=True) and losses[0] - losses[-1] > 1e-3


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("t", [0.2, 0.02])
def test_debiased_clamps_the_negatives_estimate_at_its_least_value(t, autocast):
    """Two identical views of each of N orthogonal images: positives at similarity 1, the 2(N-1)
    negatives at 0, so mean_neg e^s = 1 and a prior of 0.5 makes the estimate 2 - e^(1/t) < 0: it is
    clamped at e^(-1/t), and the loss is log(1 + 2(N-1) e^(-2/t)) (closed form). At t = 0.02 the
    similarities reach e^50: the loss must stay finite and exact."""
    n = 4
    views = [torch.eye(n, 8) for _ in range(2)]
    expected = math.log1p(2 * (n - 1) * math.exp(-2 / t))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = debiased_nt_xent(views, t, 0.5)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-30)


def test_debiased_gradient_matches_finite_differences():
    torch.manual_seed(3)
    views = [torch.randn(5, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    assert torch.autograd.gradcheck(lambda *vs: debiased_nt_xent(list(vs), 0.4, 0.1), views)


@pytest.mark.parametrize("t", [0.05, 0.01])
def test_debiased_in_float32_at_low_temperatures_stays_finite_and_exact(t):
    """At t = 0.01 similarities span e^-100 to e^100, past float32's range: computed in logs, the loss
    and its gradient stay finite and the loss agrees with the float64 loop reference."""
    torch.manual_seed(4)
    views = [torch.randn(6, 3, requires_grad=True) for _ in range(2)]
    loss = debiased_nt_xent(views, t, 0.1)
    loss.backward()
    assert loss.item() == pytest.approx(reference_debiased([v.double() for v in views], t, 0.1), rel=1e-4)
    assert all(torch.isfinite(v.grad).all() for v in views)


def reference_decoupled(views: list[torch.Tensor], t: float) -> float:
    """Yeh et al.'s decoupled loss written out with Python loops in float64: for each anchor and each
    of its positives p, -s_p / t + log(sum over the negatives of exp(s / t)); the mean over the pairs."""
    v, n = len(views), len(views[0])
    z = [[c / math.sqrt(sum(x * x for x in row)) for c in row] for view in views for row in view.tolist()]

    def s(p, q):
        return sum(x * y for x, y in zip(z[p], z[q])) / t

    losses = []
    for anchor in range(v * n):
        denominator = sum(math.exp(s(anchor, k)) for k in range(v * n) if k % n != anchor % n)
        losses += [-s(anchor, b * n + anchor % n) + math.log(denominator) for b in range(v) if b != anchor // n]
    return sum(losses) / len(losses)


@pytest.mark.parametrize("v, t", [(2, 0.3), (3, 0.2), (4, 0.05)])
def test_decoupled_matches_the_loop_reference(v, t):
    torch.manual_seed(v)
    views = [torch.randn(6, 8, dtype=torch.float64) for _ in range(v)]
    assert decoupled_nt_xent(views, t).item() == pytest.approx(reference_decoupled(views, t), rel=1e-9)


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16-autocast"])
def test_decoupled_of_identical_views_of_orthogonal_images(autocast):
    """Positives at similarity 1, the V(N-1) negatives at 0: the loss is -1/t + log(V(N-1)), below
    zero where NT-Xent's is not (nothing bounds it: the positive is not in the denominator)."""
    v, n, t = 3, 4, 0.2
    views = [torch.eye(n, 8) for _ in range(v)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = decoupled_nt_xent(views, t)
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(-1 / t + math.log(v * (n - 1)), rel=1e-6)


def test_decoupled_gradient_matches_finite_differences():
    torch.manual_seed(5)
    views = [torch.randn(5, 4, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    assert torch.autograd.gradcheck(lambda *vs: decoupled_nt_xent(list(vs), 0.4), views)
