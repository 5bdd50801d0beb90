"""Tests for multi-crop views, SwAV, DINO and the vit-tiny encoder: known answers for Sinkhorn, the
swapped-prediction and DINO losses and the DINO centre; prototype freezing and the SwAV queue; the
teacher's EMA and temperature schedule; ViT shapes and attention; short real runs that beat the
untrained backbone on kNN."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fashionssl.augment import ViewSpec, make_config, views
from fashionssl.encoders import ConvNet, VisionTransformer
from fashionssl.errors import UserError
from fashionssl.losses import dino_center, dino_loss, sinkhorn, swapped_prediction
from fashionssl.methods import build_method
from fashionssl.methods.base import encode_views
from fashionssl.methods.dino import teacher_temperature
from conftest import SHORT_RUN_MARGIN, short_run

pytestmark = pytest.mark.usefixtures("single_thread")


def make(name: str, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_method(name, ConvNet(batch_norm=True, fc_dim=None), options)


def uint8_images(n: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def multi_crop_batch(model, n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return views(uint8_images(n, seed), make_config("default"), g, model.view_spec), torch.zeros(n, dtype=torch.long)


# ---------------------------------------------------------------- multi-crop views

def test_multi_crop_shapes_and_determinism():
    spec = ViewSpec(global_views=2, local_views=3, local_size=12, local_scale=(0.05, 0.4))
    x, cfg = uint8_images(), make_config("default")
    out = views(x, cfg, torch.Generator().manual_seed(5), spec)
    assert [v.shape for v in out] == [(8, 1, 28, 28)] * 2 + [(8, 1, 12, 12)] * 3
    again = views(x, cfg, torch.Generator().manual_seed(5), spec)
    assert all(torch.equal(a, b) for a, b in zip(out, again))
    other = views(x, cfg, torch.Generator().manual_seed(6), spec)
    assert not any(torch.equal(a, b) for a, b in zip(out, other))
    assert not torch.equal(out[2], out[3])  # local views are independent


def test_global_views_do_not_depend_on_local_views():
    x, cfg = uint8_images(), make_config("default")
    two = views(x, cfg, torch.Generator().manual_seed(7))
    multi = views(x, cfg, torch.Generator().manual_seed(7), ViewSpec(local_views=4))
    assert torch.equal(two[0], multi[0]) and torch.equal(two[1], multi[1])


def test_local_views_use_the_local_scale():
    # A horizontal ramp, no flip/jitter/blur: a square crop of 1/4 of the area spans half the width,
    # so its ramp rises by about half as much as the whole image's.
    ramp = (torch.arange(28) * 9).to(torch.uint8).expand(4, 28, 28)
    cfg = make_config("none")
    full, _, local = views(ramp, cfg, torch.Generator().manual_seed(0),
                           ViewSpec(local_views=1, local_size=14, local_scale=(0.25, 0.25)))
    rise = lambda v: (v[:, 0, :, -1] - v[:, 0, :, 0]).mean().item()  # noqa: E731
    assert rise(local) / rise(full) == pytest.approx(0.5, abs=0.05)


def test_encode_views_groups_by_size():
    torch.manual_seed(0)
    encoder = ConvNet(batch_norm=True, fc_dim=None).eval()
    big, small = [torch.randn(3, 1, 28, 28) for _ in range(2)], [torch.randn(3, 1, 16, 16) for _ in range(2)]
    with torch.no_grad():
        features = encode_views(encoder, big + small)
        expected = torch.cat([encoder(v) for v in big + small])
    assert features.shape == (12, 1152)
    torch.testing.assert_close(features, expected)


# ---------------------------------------------------------------- Sinkhorn and SwAV's loss

def test_sinkhorn_balanced_input_is_softmax():
    # exp(S / eps) = [[e, 1], [1, e]] is already balanced: each sample's code is its softmax.
    codes = sinkhorn(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), epsilon=1.0, iterations=3)
    a = math.e / (math.e + 1)
    torch.testing.assert_close(codes, torch.tensor([[a, 1 - a], [1 - a, a]]))


def test_sinkhorn_spreads_identical_samples_equally():
    # Every sample prefers prototype 0, but each prototype must take half of the batch.
    codes = sinkhorn(torch.tensor([[0.9, 0.1]] * 4), epsilon=0.05, iterations=3)
    torch.testing.assert_close(codes, torch.full((4, 2), 0.5))


def test_sinkhorn_marginals():
    g = torch.Generator().manual_seed(0)
    scores = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    codes = sinkhorn(scores, epsilon=0.1, iterations=100)
    torch.testing.assert_close(codes.sum(1), torch.ones(12))  # each sample: a distribution
    torch.testing.assert_close(codes.sum(0), torch.full((8,), 12 / 8), atol=1e-4, rtol=0)  # equal share B/K
    few = sinkhorn(scores, epsilon=0.1, iterations=3)
    torch.testing.assert_close(few.sum(1), torch.ones(12))
    unbalanced = (scores / 0.1).softmax(1)  # the same codes without the prototype normalisations
    assert (few.sum(0) - 1.5).abs().max() < 0.5 * (unbalanced.sum(0) - 1.5).abs().max()
    torch.testing.assert_close(sinkhorn(scores + 3.0, 0.1, 3), few)  # a constant shift changes nothing


def test_swapped_prediction_hand_computed():
    # T = 1. View 0 scores [0, 0] -> p = (1/2, 1/2); view 1 scores [log 3, 0] -> p = (3/4, 1/4).
    # Code of view 0 is (1, 0), predicted from view 1: -log(3/4); code of view 1 is (1/2, 1/2),
    # predicted from view 0: -log(1/2). The mean over the two codes:
    scores = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]]])
    codes = torch.tensor([[[1.0, 0.0]], [[0.5, 0.5]]])
    expected = (-math.log(3 / 4) + math.log(2)) / 2
    assert swapped_prediction(scores, codes, temperature=1.0).item() == pytest.approx(expected, rel=1e-6)
    # A third (local) view with scores [0, log 3] -> p = (1/4, 3/4) joins each code's predictors:
    scores3 = torch.cat([scores, torch.tensor([[[0.0, math.log(3)]]])])
    code0 = (-math.log(3 / 4) - math.log(1 / 4)) / 2
    code1 = (math.log(2) - 0.5 * math.log(1 / 4) - 0.5 * math.log(3 / 4)) / 2
    assert swapped_prediction(scores3, codes, 1.0).item() == pytest.approx((code0 + code1) / 2, rel=1e-6)


def test_swav_prototypes_frozen_then_trained_and_unit_norm():
    model = make("swav", freeze_prototypes_steps=2, local_crops=2, prototypes=16)
    batch = multi_crop_batch(model)
    for i in range(3):
        loss, _ = model(*batch)
        model.zero_grad(set_to_none=True)
        loss.backward()
        assert (model.prototypes.weight.grad is None) == (i < 2), i
        assert model.backbone.features[0].weight.grad is not None
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(0.5 * p.grad)
        model.after_step(i, 10)
        torch.testing.assert_close(model.prototypes.weight.norm(dim=1), torch.ones(16))
    assert model.steps_done.item() == 3


def test_swav_queue_order_and_use():
    # n = 3 per step, queue 4, filled from step 1: after step 1 it holds step 1's 3 embeddings then
    # nothing; after step 2, step 2's 3 then step 1's first. Full from then on, it joins the codes.
    model = make("swav", queue_length=4, queue_start_steps=1, local_crops=1, out_dim=8)
    new = []
    for i in range(3):
        batch = multi_crop_batch(model, n=3, seed=i)
        loss, _ = model(*batch)
        new.append(None if model._new_embeddings is None else model._new_embeddings.clone())
        model.zero_grad(set_to_none=True)
        loss.backward()
        model.after_step(i, 10)
        assert model.queue_filled.item() == [0, 3, 4][i]
    assert new[0] is None and new[1].shape == (2, 3, 8)
    torch.testing.assert_close(model.queue, torch.cat([new[2], new[1][:, :1]], dim=1))
    # full: each global view's codes come from Sinkhorn over the queue and the batch together
    batch = multi_crop_batch(model, n=3, seed=9)
    loss, _ = model(*batch)
    z = F.normalize(model.projector(encode_views(model.backbone, batch[0])), dim=1)
    scores = (z @ model.prototypes.weight.T).view(3, 3, -1)
    codes = torch.stack([sinkhorn(torch.cat([model.queue[i] @ model.prototypes.weight.T, scores[i]]),
                                  model.epsilon, model.sinkhorn_iterations)[-3:] for i in range(2)])
    torch.testing.assert_close(loss, swapped_prediction(scores, codes, model.temperature))
    without_queue = torch.stack([sinkhorn(scores[i], model.epsilon, model.sinkhorn_iterations) for i in range(2)])
    assert not torch.allclose(codes, without_queue, atol=1e-3)


# ---------------------------------------------------------------- DINO

def test_dino_loss_hand_computed():
    # temperatures 1, centre 0. Teacher: view 0 [0, 0] -> (1/2, 1/2), view 1 [log 3, 0] -> (3/4, 1/4);
    # student the same logits. Pairs (teacher 0, student 1) and (teacher 1, student 0).
    logits = torch.tensor([[[0.0, 0.0]], [[math.log(3), 0.0]]])
    pair01 = -(0.5 * math.log(3 / 4) + 0.5 * math.log(1 / 4))
    pair10 = math.log(2)
    loss = dino_loss(logits, logits, torch.zeros(2), student_temperature=1.0, teacher_temperature=1.0)
    assert loss.item() == pytest.approx((pair01 + pair10) / 2, rel=1e-6)
    # centring by [log 3, 0] turns teacher view 1 into (1/2, 1/2) and view 0 into (1/4, 3/4)
    centred = dino_loss(logits, logits, torch.tensor([math.log(3), 0.0]), 1.0, 1.0)
    expected = (-(0.25 * math.log(3 / 4) + 0.75 * math.log(1 / 4)) + math.log(2)) / 2
    assert centred.item() == pytest.approx(expected, rel=1e-6)


def test_dino_center_ema_rule():
    center = torch.tensor([1.0, -1.0])
    teacher = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])  # (G=2, B=2, D=2): mean [4, 5]
    torch.testing.assert_close(dino_center(center, teacher, 0.9), torch.tensor([0.9 + 0.4, -0.9 + 0.5]))


def test_teacher_temperature_schedule():
    values = [teacher_temperature(s, 4, 0.04, 0.07) for s in (0, 1, 2, 4, 100)]
    assert values == pytest.approx([0.04, 0.0475, 0.055, 0.07, 0.07])
    assert teacher_temperature(0, 0, 0.04, 0.07) == 0.07


def test_dino_teacher_no_gradient_ema_and_schedule_state():
    model = make("dino", local_crops=2, teacher_temperature_warmup_steps=4, out_dim=64)
    teacher = [*model.teacher_backbone.parameters(), *model.teacher_head.parameters()]
    assert all(not p.requires_grad for p in teacher)
    batch = multi_crop_batch(model)
    assert model.current_teacher_temperature() == pytest.approx(0.04)
    loss, logs = model(*batch)
    loss.backward()
    assert all(p.grad is None for p in teacher)
    assert all(p.grad is not None for p in model.backbone.parameters())
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.sub_(0.1 * p.grad)
    before = [p.clone() for p in teacher]
    online = [*model.backbone.parameters(), *model.head.parameters()]
    center_before = model.center.clone()
    with torch.no_grad():  # the centre the forward computed
        t = model.teacher_head(model.teacher_backbone(torch.cat(batch[0][:2])))
    step_index, total = 5, 11
    m = 1 - (1 - 0.99) / 2  # cosine schedule at k/K = 1/2
    model.after_step(step_index, total)
    for old, new, o in zip(before, teacher, online, strict=True):
        torch.testing.assert_close(new, m * old + (1 - m) * o, rtol=0, atol=1e-7)
    torch.testing.assert_close(model.center, 0.9 * center_before + 0.1 * t.mean(0), atol=1e-5, rtol=1e-5)
    assert model.steps_done.item() == 6
    assert model.current_teacher_temperature() == pytest.approx(0.07)
    fresh = make("dino", seed=1, local_crops=2, teacher_temperature_warmup_steps=4, out_dim=64)
    fresh.load_state_dict(model.state_dict())  # resume: schedule position and centre come back
    assert fresh.steps_done.item() == 6 and torch.equal(fresh.center, model.center)
    assert set(logs) == {"teacher_entropy"} and 0 < logs["teacher_entropy"] <= math.log(64) + 1e-4


@pytest.mark.parametrize("name, option, value", [
    ("swav", "local_scale", [0.5, 0.2]), ("swav", "local_scale", 0.3), ("swav", "local_crops", -1),
    ("swav", "local_size", 1), ("swav", "epsilon", 0), ("swav", "prototypes", 0), ("swav", "queue_length", -1),
    ("dino", "teacher_temperature", 0), ("dino", "momentum", 1.0), ("dino", "center_momentum", -0.1),
    ("dino", "teacher_temperature_warmup_steps", 1.5), ("dino", "local_scale", [0, 0.3]),
    ("simclr", "local_crops", -1), ("simclr", "local_size", 1), ("simclr", "loss", "infonce"), ("simclr", "loss", 1),
])
def test_bad_option_names_the_option(name, option, value):
    with pytest.raises(UserError, match=rf"{name} option {option} must be"):
        make(name, **{option: value})


@pytest.mark.parametrize("class_prior", [1.0, -0.1])
def test_simclr_class_prior_must_be_a_fraction(class_prior):
    with pytest.raises(UserError, match="simclr option class_prior must be a number in"):
        make("simclr", loss="debiased", class_prior=class_prior)


def test_simclr_class_prior_without_the_debiased_loss_is_refused():
    with pytest.raises(UserError, match="class_prior applies to loss debiased only .* --opt loss=debiased"):
        make("simclr", class_prior=0.05)


# ---------------------------------------------------------------- vit-tiny

def test_vit_shapes_attention_and_local_crops():
    torch.manual_seed(0)
    vit = VisionTransformer(depth=2).eval()
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert vit(x).shape == (3, vit.feature_dim) == (3, 192)
        assert vit(torch.randn(3, 1, 16, 16)).shape == (3, 192)  # position embeddings interpolated to 4x4
        maps = vit.cls_attention(x)
        assert maps.shape == (3, 3, 7, 7) and (maps >= 0).all()
        tokens = vit.blocks[-1].norm1(vit.blocks[0](vit.tokens(x)))
        weights = vit.blocks[-1].attn.weights(tokens)  # (B, heads, 50, 50)
        torch.testing.assert_close(weights.sum(-1), torch.ones(3, 3, 50))
        torch.testing.assert_close(maps, weights[:, :, 0, 1:].reshape(3, 3, 7, 7))
        assert (maps.sum((-2, -1)) < 1).all()  # CLS also attends to itself
        # the fused path computes the same attention as the explicit weights
        attn = vit.blocks[-1].attn
        _, _, v = attn._qkv(tokens)
        explicit = attn.proj((weights @ v).transpose(1, 2).flatten(2))
        torch.testing.assert_close(attn(tokens), explicit, atol=1e-5, rtol=1e-4)
    coarse = VisionTransformer(patch_size=7, depth=1).eval()
    assert coarse.cls_attention(x).shape == (3, 3, 4, 4)


def test_convnet_features_of_small_crops():
    torch.manual_seed(0)
    net = ConvNet(batch_norm=True, fc_dim=None).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 16, 16)).shape == net(torch.randn(2, 1, 12, 12)).shape == (2, 1152)


# ---------------------------------------------------------------- short real runs

# test_methods' budget (96 steps of batch 64). DINO needs a lower learning rate (its paper scales
# 5e-4 per 256 images; at 2e-3 it stays at the untrained level here) and a teacher that keeps up
# with the student over so few steps (momentum 0.96). Measured margins on a busy 2-core CPU:
# swav +0.026 at its lr of 4e-3 (AVX2 kernels +0.024; +0.030 at 8e-3, its lr before), dino +0.019
# (dino at lr 2e-3: +0.001 with momentum 0.9, +0.007 with 0.96).
RUN_OVERRIDES = {"swav": {}, "dino": {"lr": 5e-4, "method_options": {"momentum": 0.96}},
                 "simclr": {"method_options": {"local_crops": 4}},  # SimCLR with multi-crop
                 "simclr-debiased": {"method_options": {"loss": "debiased"}},  # named method-variant
                 "simclr-decoupled": {"method_options": {"loss": "decoupled"}}}


@pytest.mark.parametrize("name", sorted(RUN_OVERRIDES))
def test_short_run_beats_untrained_backbone(name, knn_setup, tmp_path):
    knn_accuracy, untrained = knn_setup
    model, _ = short_run(name.partition("-")[0], tmp_path / "run", **RUN_OVERRIDES[name])
    trained = knn_accuracy(model.backbone)
    margin = trained - untrained
    print(f"{name}: kNN val accuracy untrained {untrained:.3f}, trained {trained:.3f}, margin {margin:+.3f}")
    assert margin > SHORT_RUN_MARGIN


def test_dino_trains_a_vit_on_multi_crop_and_its_attention_draws():
    """DINO with vit-tiny: global 28x28 and local 16x16 crops go through one ViT (position embeddings
    interpolated), a step moves the student, and the report draws its CLS attention maps."""
    from fashionssl.report import attention_figure

    torch.manual_seed(0)
    model = build_method("dino", VisionTransformer(depth=2), {"out_dim": 64, "local_crops": 2})
    batch = multi_crop_batch(model)
    assert [v.shape[-1] for v in batch[0]] == [28, 28, 16, 16]
    before = [p.detach().clone() for p in model.backbone.parameters()]
    loss, _ = model(*batch)
    loss.backward()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.backbone.parameters()))
    images = uint8_images(3).unsqueeze(1)  # (N, 1, 28, 28), as datasets hold them
    with torch.no_grad():
        maps = model.backbone.eval().cls_attention(images.float() / 255)
    assert maps.shape == (3, 3, 7, 7)
    figure = attention_figure(images, maps)
    assert len(figure.axes) == 3 * (3 + 2)  # per image: itself, the head mean, each of 3 heads
