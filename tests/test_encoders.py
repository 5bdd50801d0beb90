"""Tests for fashionssl.encoders: output shapes, feature_dim, memory formats, bf16 autocast, names,
and the reference blog's parameter count."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fashionssl import encoders as encoders_module
from fashionssl.encoders import ENCODERS, build_encoder, conv_bn, conv_patches
from fashionssl.errors import UserError


pytestmark = pytest.mark.usefixtures("single_thread")

FEATURE_DIMS = {"cnn": 256, "cnn-bn": 1152, "cnn-bn-wide": 2304, "cnn-bn-wide-4x4": 4096, "resnet18": 512,
                "vit-tiny": 192}


@pytest.fixture(scope="module")
def encoders():
    torch.manual_seed(0)
    return {name: build_encoder(name).eval() for name in ENCODERS}


def test_every_encoder_has_a_known_feature_dim():
    assert set(ENCODERS) == set(FEATURE_DIMS)


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_output_shape_and_feature_dim(encoders, name):
    model = encoders[name]
    assert model.feature_dim == FEATURE_DIMS[name]
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (3, FEATURE_DIMS[name])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # samples are processed independently in eval mode
    with torch.no_grad():
        torch.testing.assert_close(model(x[1:2]), out[1:2], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, grid", [("cnn-bn-wide", 3), ("cnn-bn-wide-4x4", 4)])
def test_the_last_pool_keeps_the_last_row_and_column_only_in_ceil_mode(name, grid):
    """The features are the last stage's 7x7 map max-pooled by 2 (to 3x3: its last row and column
    dropped; in ceil mode to 4x4: the last window holds them alone), after ReLU, flattened; so
    raising the map's last row changes the encoder's features only in ceil mode."""
    torch.manual_seed(0)
    net = build_encoder(name).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        last_map = net.features[:10](x)  # two full stages, then the last conv and BN: (4, 256, 7, 7)
        expected = F.relu(F.max_pool2d(last_map, 2, ceil_mode=grid == 4)).flatten(1)
        torch.testing.assert_close(net(x), expected)

        def raise_last_row(module, inputs, output):
            output = output.clone()
            output[:, :, 6, :] += 100
            return output

        hook = net.features[9].register_forward_hook(raise_last_row)
        bumped = net(x)
        hook.remove()
    assert torch.equal(bumped, expected) == (grid == 3)


def relu_before_pool(net: nn.Module) -> nn.Sequential:
    """The usual stage order conv, (BN,) ReLU, max-pool, with `net`'s own layer objects."""
    layers, pending = [], None
    for layer in net.features:
        if isinstance(layer, nn.MaxPool2d):
            pending = layer
        elif isinstance(layer, nn.ReLU):
            layers += [layer, pending]
        else:
            layers.append(layer)
    return nn.Sequential(*layers)


@pytest.mark.parametrize("name", ["cnn", "cnn-bn"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_pool_before_relu_is_exactly_the_usual_stage(name, precision, layout):
    # ReLU commutes with a maximum, and both are exact: outputs and every gradient are bit-identical,
    # in training mode (BatchNorm on batch statistics), in fp32 and under bf16 autocast.
    torch.manual_seed(0)
    net = build_encoder(name).to(memory_format=layout)
    usual = relu_before_pool(net)
    assert [type(m) for m in usual] != [type(m) for m in net.features]  # really another order
    x = torch.randn(16, 1, 28, 28).contiguous(memory_format=layout)
    results = []
    for features in (net.features, usual):
        net.zero_grad()
        inputs = x.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = features(inputs)
        (out.float() * torch.linspace(-1, 1, out.numel()).view(out.shape)).sum().backward()
        results.append([out, inputs.grad, *(p.grad.clone() for p in net.features.parameters())])
    for fast, plain in zip(*results, strict=True):
        torch.testing.assert_close(fast, plain, rtol=0, atol=0)


@pytest.mark.parametrize("kernel, dilation, stride", [(3, 1, 1), (3, 2, 1), (3, 1, 2), ((2, 3), (1, 2), (2, 1))])
def test_conv_patches_are_unfolds_patches(kernel, dilation, stride):
    x = torch.randn(2, 3, 9, 10).contiguous(memory_format=torch.channels_last)
    conv = nn.Conv2d(3, 4, kernel, stride, dilation=dilation)
    torch.testing.assert_close(conv_patches(x, conv), F.unfold(x, kernel, dilation, 0, stride), rtol=0, atol=0)


@pytest.mark.parametrize("channels, bias", [(1, False), (1, True), (3, False)])
def test_folded_conv_bn_is_batchnorm_of_the_convolution(channels, bias):
    # In float64 the fold agrees with BatchNorm to rounding: outputs, every gradient (the input's
    # too, which reaches the statistics through the patches), and the running statistics.
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, 8, 3, padding=1, bias=bias).double()
    bn = nn.BatchNorm2d(8).double()
    with torch.no_grad():
        bn.weight.uniform_(-2, 2), bn.bias.uniform_(-1, 1)  # negative scales too
    x = (torch.rand(6, channels, 12, 12, dtype=torch.float64) * 3 + 1).requires_grad_(True)  # mean far from 0
    results = []
    for forward in (conv_bn, lambda c, b, inputs: b(c(inputs))):
        c, b, inputs = copy.deepcopy(conv), copy.deepcopy(bn), x.detach().clone().requires_grad_(True)
        out = forward(c, b, inputs)
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view(out.shape)).sum().backward()
        results.append([out, inputs.grad, *(p.grad for p in (*c.parameters(), *b.parameters())), *b.buffers()])
    for folded, plain in zip(*results, strict=True):
        torch.testing.assert_close(folded, plain, rtol=1e-9, atol=1e-9)


def train_step_results(net: nn.Module, x: torch.Tensor, fold: bool, bf16: bool, monkeypatch) -> list[torch.Tensor]:
    """One training-mode forward and backward of a copy of `net`, with or without the fold: the
    output, every parameter's gradient and every buffer (the running statistics)."""
    monkeypatch.setattr(encoders_module, "FOLD_MAX_PATCH", encoders_module.FOLD_MAX_PATCH if fold else 0)
    model = copy.deepcopy(net)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    (out.double() * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view(out.shape)).sum().backward()
    return [out.double(), *(p.grad.double() for p in model.parameters()), *(b.double() for b in model.buffers())]


def max_error(results: list[torch.Tensor], reference: list[torch.Tensor]) -> list[float]:
    return [((r - ref).abs().max() / ref.abs().max().clamp_min(1e-3)).item() for r, ref in zip(results, reference, strict=True)]


@pytest.mark.parametrize("name, precision", [("cnn-bn", "fp32"), ("cnn-bn", "bf16"), ("cnn-bn-wide", "bf16"),
                                             ("resnet18", "fp64")])
def test_encoders_with_the_fold_train_as_without(name, precision, monkeypatch):
    # The whole encoder in training mode, channels-last (as pretraining runs it), with the fold and
    # with the plain layers: the same outputs, gradients and running statistics, to the precision's
    # rounding. At batch 16 on random images these gradients are touchy: a 1e-6 change of ResNet-18's
    # stem output moves them by several percent, and bf16 autocast alone moves cnn-bn's by up to 20%
    # from float64's. So ResNet-18 is checked in float64, and under bf16 the fold must come as close
    # to the float64 step as the plain layers' bf16 step does.
    torch.manual_seed(0)
    net = build_encoder(name).to(memory_format=torch.channels_last).train()
    x = torch.randn(16, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    if precision == "fp64":
        net, x = net.double(), x.double()
    folded = train_step_results(net, x, True, precision == "bf16", monkeypatch)
    plain = train_step_results(net, x, False, precision == "bf16", monkeypatch)
    if precision == "bf16":
        exact = train_step_results(net.double(), x.double(), False, False, monkeypatch)
        for fold_error, plain_error in zip(max_error(folded, exact), max_error(plain, exact), strict=True):
            assert fold_error <= 1.5 * plain_error + 0.01
    else:
        assert max(max_error(folded, plain)) <= (1e-9 if precision == "fp64" else 1e-4)


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_channels_last_input_gives_same_features(encoders, name):
    model = encoders[name]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        out = model(x.contiguous(memory_format=torch.channels_last))
    assert out.shape == (2, FEATURE_DIMS[name])
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(FEATURE_DIMS))
def test_bf16_autocast(encoders, name):
    model = encoders[name]
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        expected = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    assert out.shape == (2, FEATURE_DIMS[name])
    # the last layer ran in bf16 under autocast; the ViT ends in a LayerNorm, which autocast keeps in fp32
    assert out.dtype == (torch.float32 if name == "vit-tiny" else torch.bfloat16)
    assert torch.isfinite(out.float()).all()
    # close to fp32 relative to the feature scale
    err = (out.float() - expected).abs().max() / expected.abs().max()
    assert err < 0.1


def test_training_mode_backward_reaches_first_layer():
    model = build_encoder("cnn-bn").train()
    out = model(torch.randn(4, 1, 28, 28))
    out.pow(2).mean().backward()
    first = next(model.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


def test_unknown_encoder_names_choices():
    with pytest.raises(UserError) as info:
        build_encoder("nope")
    message = str(info.value)
    assert "'nope'" in message
    for name in ENCODERS:
        assert name in message


def test_build_returns_fresh_modules():
    a, b = build_encoder("cnn"), build_encoder("cnn")
    assert a is not b
    assert all(p is not q for p, q in zip(a.parameters(), b.parameters()))


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cnn_parameter_count_matches_reference_blog():
    # conv 1->32, 32->64, 64->128 (3x3, with bias), then 128 * 3 * 3 = 1152 -> 256 linear
    conv1 = 1 * 32 * 3 * 3 + 32  # 320
    conv2 = 32 * 64 * 3 * 3 + 64  # 18_496
    conv3 = 64 * 128 * 3 * 3 + 128  # 73_856
    fc = 1152 * 256 + 256  # 295_168
    assert conv1 + conv2 + conv3 + fc == 387_840
    model = build_encoder("cnn")
    assert count(model) == 387_840
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_cnn_bn_parameter_count():
    # convolutions lose their bias (BN has one), each BN adds a scale and a shift per channel;
    # no linear layer: the representation is the flattened 128x3x3 conv map
    convs = 1 * 32 * 9 + 32 * 64 * 9 + 64 * 128 * 9
    bns = 2 * (32 + 64 + 128)
    model = build_encoder("cnn-bn")
    assert count(model) == convs + bns == 92_896
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 3


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize(("channels", "size"), [(3, 32), (1, 64), (3, 40)])
def test_encoders_take_channels_and_size_from_the_data(name, channels, size):
    """Colour and larger images give features of the encoder's usual size; cnn and cnn-bn keep
    their architecture but for the first convolution's input channels."""
    net = build_encoder(name, channels, size).eval()
    with torch.no_grad():
        out = net(torch.randn(2, channels, size, size))
    assert out.shape == (2, net.feature_dim) and torch.isfinite(out).all()
    grey = build_encoder(name).state_dict()
    changed = {k for k, v in net.state_dict().items() if v.shape != grey[k].shape}
    first_layer = {"cnn": "features.0.weight", "cnn-bn": "features.0.weight", "cnn-bn-wide": "features.0.weight",
                   "cnn-bn-wide-4x4": "features.0.weight",
                   "resnet18": "stem.0.weight",
                   "vit-tiny": "patch_embed.weight"}[name]
    expected = ({first_layer} if channels != 1 else set()) | ({"pos_embed"} if name == "vit-tiny" else set())
    assert net.state_dict().keys() == grey.keys() and changed == expected


def test_vit_refuses_images_its_patches_do_not_tile():
    with pytest.raises(UserError, match="encoder vit-tiny cuts images into 4x4 patches, which do not tile 30x30"):
        build_encoder("vit-tiny", 1, 30)
