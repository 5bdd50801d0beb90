"""Tests for fashionssl.augment: shapes, exactness of the no-op paths, per-sample randomness,
the geometry of each op, and config validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from fashionssl.augment import (
    _LUMA,
    _N_COLOUR_DRAWS,
    _N_DRAWS,
    _N_ERASE_DRAWS,
    PRESETS,
    AugmentConfig,
    _augment_with,
    _hue_rotation,
    augment,
    denormalize,
    make_config,
    normalize,
    to_float,
    ViewSpec,
    views,
)
from fashionssl.data import DataInfo
from fashionssl.errors import UserError

def only(**fields: object) -> AugmentConfig:
    """Every op off except the ones given."""
    return make_config("none", **fields)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(batch: int = 8, seed: int = 0) -> torch.Tensor:
    """Random uint8 (B,28,28) images with a dark left half so that flips are visible."""
    x = torch.randint(0, 256, (batch, 28, 28), dtype=torch.uint8, generator=gen(seed))
    x[..., :14] //= 4
    return x


def same_image(batch: int) -> torch.Tensor:
    return images(1).expand(batch, 28, 28).contiguous()


def unnormalize(out: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    return out * cfg.std + cfg.mean


def n_distinct(out: torch.Tensor) -> int:
    return len(torch.unique(out.flatten(1), dim=0))


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(8, 28, 28), (8, 1, 28, 28)])
def test_shape_dtype_and_range(preset: str, shape: tuple[int, ...]) -> None:
    cfg = make_config(preset)
    out = augment(images().view(shape), cfg, gen())
    assert out.shape == (8, 1, 28, 28) and out.dtype == torch.float32
    pixels = unnormalize(out, cfg)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


unit = st.floats(0.0, 1.0)
ordered_pair = lambda lo, hi: st.tuples(st.floats(lo, hi), st.floats(lo, hi)).map(sorted)  # noqa: E731


@settings(max_examples=30, deadline=None)
@given(
    crop_scale=ordered_pair(0.01, 1.0),
    crop_ratio=ordered_pair(0.2, 5.0),
    flip_p=unit,
    jitter_p=unit,
    brightness=unit,
    contrast=unit,
    blur_p=unit,
    blur_sigma=ordered_pair(0.01, 5.0),
    blur_kernel=st.sampled_from([1, 3, 5, 7]),
    size=st.integers(4, 40),
)
def test_any_valid_config_gives_shape_and_range(**fields: object) -> None:
    cfg = make_config(**fields)
    out = augment(images(4), cfg, gen())
    assert out.shape == (4, 1, cfg.size, cfg.size) and torch.isfinite(out).all()
    pixels = unnormalize(out, cfg)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_range_with_strongest_jitter() -> None:
    cfg = make_config(brightness=1.0, contrast=1.0, jitter_p=1.0, blur_p=1.0)
    pixels = unnormalize(augment(images(64), cfg, gen()), cfg)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_output_size() -> None:
    assert augment(images(), make_config(size=12), gen()).shape == (8, 1, 12, 12)


def test_to_float_and_normalize() -> None:
    x = images()
    assert torch.equal(to_float(x), x.unsqueeze(1).float() / 255)
    cfg = make_config("default")
    assert torch.allclose(normalize(x, cfg), (x.unsqueeze(1).float() / 255 - cfg.mean) / cfg.std)
    with pytest.raises(ValueError, match="uint8"):
        to_float(x.float())


def test_preset_none_is_exactly_normalize() -> None:
    x = images()
    assert torch.equal(augment(x, make_config("none"), gen()), normalize(x, make_config("none")))


def test_seed_preset_matches_the_blog() -> None:
    seed = make_config("seed")
    assert seed.crop_scale == (0.7, 1.0) and seed.blur_p == 1.0 and seed.blur_kernel == 3
    assert (seed.mean, seed.std) == (0.1307, 0.3081)


def test_same_seed_same_views_and_global_rng_untouched() -> None:
    x, cfg = images(), make_config("default")
    state = torch.get_rng_state()
    first = augment(x, cfg, gen(1))
    assert torch.equal(first, augment(x, cfg, gen(1)))
    assert not torch.equal(first, augment(x, cfg, gen(2)))
    assert torch.equal(state, torch.get_rng_state())


def test_views_are_independent() -> None:
    x = images()
    out = views(x, make_config("default"), gen(), ViewSpec(global_views=3))
    assert len(out) == 3 and all(v.shape == (8, 1, 28, 28) for v in out)
    assert not torch.equal(out[0], out[1]) and not torch.equal(out[1], out[2])


@pytest.mark.parametrize("preset", ["seed", "default"])
def test_same_image_gets_different_views(preset: str) -> None:
    assert n_distinct(augment(same_image(64), make_config(preset), gen())) == 64


@pytest.mark.parametrize(
    "cfg",
    [
        only(crop_scale=(0.2, 1.0), crop_ratio=(0.75, 4 / 3)),
        only(jitter_p=1.0),
        only(blur_p=1.0),
    ],
    ids=["crop", "jitter", "blur"],
)
def test_each_op_draws_per_sample(cfg: AugmentConfig) -> None:
    out = augment(same_image(64), cfg, gen())
    assert n_distinct(out) == 64
    assert len(torch.unique(out.mean(dim=(1, 2, 3)))) > 32


def test_flip_half_the_samples() -> None:
    x, cfg = same_image(256), only(flip_p=0.5)
    out = augment(x, cfg, gen())
    plain, mirrored = normalize(x, cfg), normalize(x, cfg).flip(-1)
    is_plain = torch.isclose(out, plain, atol=1e-5).flatten(1).all(1)
    is_mirrored = torch.isclose(out, mirrored, atol=1e-5).flatten(1).all(1)
    assert torch.all(is_plain ^ is_mirrored)
    assert 0.4 < is_mirrored.float().mean() < 0.6


def test_flip_always_equals_torch_flip() -> None:
    x, cfg = images(), only(flip_p=1.0)
    torch.testing.assert_close(augment(x, cfg, gen()), normalize(x, cfg).flip(-1), atol=1e-5, rtol=0)


def draws(batch: int, **columns: float) -> torch.Tensor:
    """Uniform draws with chosen columns fixed (names as unpacked in _augment_with)."""
    names = ["area", "log_ratio", "pos_x", "pos_y", "flip", "jitter", "bright", "contrast", "blur", "sigma"]
    assert len(names) == _N_DRAWS
    u = torch.rand(batch, _N_DRAWS, generator=gen(5))
    for name, value in columns.items():
        u[:, names.index(name)] = value
    return u


def test_full_crop_resampling_is_identity() -> None:
    # flip_p > 0 forces the resampling path; flip draws of 0.99 never flip.
    x = to_float(images())
    cfg = make_config("none", flip_p=0.5)
    out = _augment_with(x.clone(), cfg, draws(8, flip=0.99))
    torch.testing.assert_close(unnormalize(out, cfg), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("pos_x", "pos_y", "rows", "cols"),
    [
        (0.0, 0.0, slice(0, 14), slice(0, 14)),
        (1.0, 0.0, slice(0, 14), slice(14, 28)),
        (0.0, 1.0, slice(14, 28), slice(0, 14)),
    ],
)
def test_quarter_crop_lands_on_the_drawn_corner(pos_x: float, pos_y: float, rows: slice, cols: slice) -> None:
    # A quarter-area square crop resampled to 14x14 hits input pixel centres exactly.
    x = to_float(images())
    cfg = only(crop_scale=(0.25, 0.25), size=14)
    out = _augment_with(x.clone(), cfg, draws(8, pos_x=pos_x, pos_y=pos_y))
    torch.testing.assert_close(unnormalize(out, cfg), x[:, :, rows, cols], atol=1e-5, rtol=0)


def test_aspect_ratio_is_width_over_height() -> None:
    # Area 1/2 at ratio 2: full width, top half (pos_y = 0), stretched back to 28 rows -- what
    # bilinear interpolate gives, except the last row, which we blend with the row below the crop.
    x = to_float(images())
    cfg = only(crop_scale=(0.5, 0.5), crop_ratio=(2.0, 2.0))
    out = unnormalize(_augment_with(x.clone(), cfg, draws(8, pos_y=0.0)), cfg)
    expected = F.interpolate(x[:, :, :14, :], size=(28, 28), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out[:, :, :27], expected[:, :, :27], atol=1e-5, rtol=0)


def test_brightness_scales_each_image() -> None:
    x = (to_float(same_image(256)) * 0.5 * 255).round().to(torch.uint8)  # no pixel can clip at 1.5x
    cfg = only(jitter_p=1.0, brightness=0.5, contrast=0.0)
    pixels, original = unnormalize(augment(x, cfg, gen()), cfg), to_float(x)
    factor = pixels.sum(dim=(1, 2, 3)) / original.sum(dim=(1, 2, 3))
    torch.testing.assert_close(pixels, original * factor.view(-1, 1, 1, 1), atol=1e-5, rtol=0)
    assert 0.5 <= factor.min() < 0.7 and 1.3 < factor.max() <= 1.5


def test_contrast_keeps_mean_and_scales_spread() -> None:
    x = (to_float(same_image(256)) * 0.5 * 255 + 64).round().to(torch.uint8)  # in [0.25, 0.75]
    cfg = only(jitter_p=1.0, brightness=0.0, contrast=0.5)
    pixels, original = unnormalize(augment(x, cfg, gen()), cfg), to_float(x)
    torch.testing.assert_close(pixels.mean(dim=(1, 2, 3)), original.mean(dim=(1, 2, 3)), atol=1e-5, rtol=0)
    factor = pixels.std(dim=(1, 2, 3)) / original.std(dim=(1, 2, 3))
    assert 0.5 - 1e-4 <= factor.min() < 0.7 and 1.3 < factor.max() <= 1.5 + 1e-4


def test_brightness_then_contrast_like_torchvision() -> None:
    # Draws 1.0 / 0.0 give the extreme factors b = 1.4, c = 0.6; pixels <= 0.5 never clip.
    x = to_float(images()) * 0.5
    cfg = only(jitter_p=1.0, brightness=0.4, contrast=0.4)
    out = unnormalize(_augment_with(x.clone(), cfg, draws(8, jitter=0.0, bright=1.0, contrast=0.0)), cfg)
    brightened = 1.4 * x
    expected = 0.6 * brightened + 0.4 * brightened.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_jitter_probability() -> None:
    x, cfg = same_image(256), only(jitter_p=0.5)
    unchanged = (augment(x, cfg, gen()) == normalize(x, cfg)).flatten(1).all(1)
    assert 0.4 < unchanged.float().mean() < 0.6


def test_blur_matches_reflect_padded_gaussian() -> None:
    x = to_float(images())
    cfg = only(blur_p=1.0, blur_sigma=(1.0, 1.0), blur_kernel=3)
    w = torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)])
    w = w / w.sum()
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), torch.outer(w, w).view(1, 1, 3, 3))
    torch.testing.assert_close(unnormalize(augment(images(), cfg, gen()), cfg), expected, atol=1e-5, rtol=0)


def test_blur_keeps_constants_and_smooths_noise() -> None:
    cfg = only(blur_p=1.0, blur_sigma=(1.5, 1.5), blur_kernel=5)
    flat = torch.full((4, 28, 28), 100, dtype=torch.uint8)
    torch.testing.assert_close(augment(flat, cfg, gen()), normalize(flat, cfg), atol=1e-5, rtol=0)
    noise = images(4)
    assert torch.all(augment(noise, cfg, gen()).var(dim=(1, 2, 3)) < 0.5 * normalize(noise, cfg).var(dim=(1, 2, 3)))


def test_blur_probability() -> None:
    x, cfg = images(256), only(blur_p=0.5)
    unchanged = (augment(x, cfg, gen()) == normalize(x, cfg)).flatten(1).all(1)
    assert 0.4 < unchanged.float().mean() < 0.6


def test_each_view_depends_only_on_its_image_and_draws() -> None:
    x = to_float(images(16))
    cfg = make_config(jitter_p=1.0, blur_p=1.0)
    u = draws(16)
    batch = _augment_with(x.clone(), cfg, u)
    for i in (0, 7, 15):
        alone = _augment_with(x[i : i + 1].clone(), cfg, u[i : i + 1])
        torch.testing.assert_close(alone, batch[i : i + 1], atol=1e-5, rtol=0)


def test_erasing_sets_a_rectangle_of_the_drawn_area_to_the_mean() -> None:
    x = torch.full((64, 28, 28), 200, dtype=torch.uint8)
    cfg = only(erase_p=1.0, erase_scale=(0.25, 0.25), erase_ratio=(1.0, 1.0))
    erased = augment(x, cfg, gen()).squeeze(1).abs() < 1e-6  # the mean standardises to 0
    assert torch.all(erased.sum(dim=(1, 2)) == 14 * 14)  # a quarter of 28x28: a 14x14 square
    assert torch.all(erased.any(2).sum(1) == 14) and torch.all(erased.any(1).sum(1) == 14)
    assert len(torch.unique(erased.flatten(1).float().argmax(1))) > 32  # the corner is drawn per image
    untouched = augment(x, cfg, gen()).squeeze(1)[~erased]
    torch.testing.assert_close(untouched, normalize(x, cfg).squeeze(1)[~erased])


def test_erasing_probability_and_shapes() -> None:
    x, cfg = images(256), only(erase_p=0.5)
    out = augment(x, cfg, gen())
    unchanged = (out == normalize(x, cfg)).flatten(1).all(1)
    assert 0.4 < unchanged.float().mean() < 0.6
    area = (out != normalize(x, cfg)).flatten(1).float().mean(1)[~unchanged]
    assert area.min() > 0 and area.max() <= 0.33 + 2 * 28 / 784  # within erase_scale, up to a pixel's edge


@pytest.mark.parametrize("channels", [1, 3])
def test_each_erased_view_depends_only_on_its_image_and_draws(channels: int) -> None:
    x = to_float(images(16)) if channels == 1 else to_float(colour_images(16))
    cfg = make_config(erase_p=0.5, jitter_p=1.0)
    u = torch.rand((16, _N_DRAWS + (channels == 3) * _N_COLOUR_DRAWS + _N_ERASE_DRAWS), generator=gen(1))
    batch = _augment_with(x.clone(), cfg, u)
    for i in (0, 7, 15):
        alone = _augment_with(x[i : i + 1].clone(), cfg, u[i : i + 1])
        torch.testing.assert_close(alone, batch[i : i + 1], atol=1e-5, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_shapes_and_range() -> None:
    cfg = make_config("default")
    out = augment(images().cuda(), cfg, torch.Generator(device="cuda").manual_seed(0))
    assert out.is_cuda and out.shape == (8, 1, 28, 28)
    pixels = unnormalize(out, cfg)
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5


def test_make_config_overrides_and_lists() -> None:
    cfg = make_config("seed", crop_scale=[0.5, 1.0], size=16)
    assert cfg.crop_scale == (0.5, 1.0) and cfg.size == 16 and cfg.mean == 0.1307
    assert cfg == make_config("seed", crop_scale=(0.5, 1.0), size=16) and hash(cfg)
    assert make_config() == make_config("default") == AugmentConfig()


def test_make_config_unknown_preset_lists_presets() -> None:
    with pytest.raises(UserError, match="nope.*seed, default, none"):
        make_config("nope")


def test_make_config_unknown_key_lists_keys() -> None:
    with pytest.raises(UserError, match="crop_scal\\b.*valid options: crop_scale"):
        make_config(crop_scal=(0.5, 1.0))


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("crop_scale", (0.0, 1.0)),
        ("crop_scale", (0.6, 0.5)),
        ("crop_scale", (0.5, 1.5)),
        ("crop_scale", [0.5]),
        ("crop_scale", "0.5,1"),
        ("crop_ratio", (2.0, 1.0)),
        ("crop_ratio", (0.0, 1.0)),
        ("blur_sigma", (0.0, 1.0)),
        ("flip_p", 1.5),
        ("jitter_p", -0.1),
        ("blur_p", True),
        ("brightness", 1.2),
        ("contrast", -0.5),
        ("blur_kernel", 4),
        ("blur_kernel", 0),
        ("blur_kernel", 3.0),
        ("blur_kernel", 61),
        ("std", 0.0),
        ("std", [0.2, 0.3]),
        ("mean", float("nan")),
        ("saturation", 1.5),
        ("hue", 0.6),
        ("grayscale_p", 2.0),
        ("erase_p", 1.5),
        ("erase_scale", (0.0, 0.3)),
        ("erase_scale", (0.5, 0.2)),
        ("erase_ratio", (3.0, 0.3)),
        ("size", 0),
        ("size", 28.0),
    ],
)
def test_bad_values_name_the_field(field: str, value: object) -> None:
    with pytest.raises(UserError, match=f"augment option {field}:"):
        make_config(**{field: value})


# ---------------------------------------------------------------- colour images


def colour_images(batch: int = 8, seed: int = 0, size: int = 32) -> torch.Tensor:
    """Random uint8 (B,3,size,size) images."""
    return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=gen(seed))


def test_colour_views_keep_channels_and_range_for_every_preset() -> None:
    info = DataInfo(3, 32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), ("a", "b"))
    for preset in PRESETS:
        cfg = make_config(preset, info)
        out = augment(colour_images(), cfg, gen())
        assert out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
        pixels = denormalize(out, cfg)
        assert pixels.min() >= 0 and pixels.max() <= 1


def test_make_config_takes_normalisation_and_size_from_the_data_unless_given() -> None:
    info = DataInfo(3, 40, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), None)
    cfg = make_config("default", info)
    assert (cfg.mean, cfg.std, cfg.size) == (info.mean, info.std, 40)
    assert make_config("seed", info).mean == 0.1307  # the blog's constants are part of its recipe
    assert make_config("default", info, mean=[0.5, 0.5, 0.5]).mean == (0.5, 0.5, 0.5)
    with pytest.raises(UserError, match=r"augment option mean: needs one value or 1 \(one per channel of the data\)"):
        make_config("default", DataInfo(1, 28, (0.3,), (0.3,), None), mean=[0.5, 0.5, 0.5])
    x = colour_images(2, size=40)
    expected = (x.float() / 255 - torch.tensor(info.mean).view(1, 3, 1, 1)) / torch.tensor(info.std).view(1, 3, 1, 1)
    torch.testing.assert_close(normalize(x, cfg), expected)


def test_hue_rotation_turns_the_colour_wheel_and_keeps_grey() -> None:
    third = _hue_rotation(torch.tensor([1 / 3, -1 / 3, 0.0]))
    red, green, blue = torch.eye(3)
    torch.testing.assert_close(third[0] @ red, green, atol=1e-6, rtol=0)  # red -> green -> blue
    torch.testing.assert_close(third[0] @ green, blue, atol=1e-6, rtol=0)
    torch.testing.assert_close(third[1] @ red, blue, atol=1e-6, rtol=0)
    torch.testing.assert_close(third[2], torch.eye(3))
    any_turn = _hue_rotation(torch.rand(16, generator=gen()))
    torch.testing.assert_close(any_turn @ torch.ones(3), torch.ones(16, 3))  # grey stays grey
    torch.testing.assert_close(any_turn @ any_turn.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-6, rtol=0)


def test_grayscale_gives_the_luma_image_in_every_channel() -> None:
    x, cfg = colour_images(4), only(grayscale_p=1.0, size=32)
    luma = (to_float(x) * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True).expand(-1, 3, -1, -1)
    torch.testing.assert_close(denormalize(augment(x, cfg, gen()), cfg), luma, atol=1e-6, rtol=0)


def test_saturation_blends_each_view_with_its_luma_image() -> None:
    """With brightness, contrast and hue off, a view is luma + s * (x - luma) with s in [0.6, 1.4]."""
    x, cfg = colour_images(16) // 2 + 64, only(jitter_p=1.0, brightness=0.0, contrast=0.0, hue=0.0, size=32)
    pixels = to_float(x)
    luma = (pixels * torch.tensor(_LUMA).view(1, 3, 1, 1)).sum(1, keepdim=True)
    chroma, out = (pixels - luma).flatten(1), (denormalize(augment(x, cfg, gen()), cfg) - luma).flatten(1)
    s = (out * chroma).sum(1) / chroma.pow(2).sum(1)  # least-squares factor per view
    torch.testing.assert_close(out, s[:, None] * chroma, atol=1e-5, rtol=0)
    assert ((s > 0.6 - 1e-4) & (s < 1.4 + 1e-4)).all() and len(torch.unique(s)) == 16


def test_colour_ops_leave_grey_colour_images_grey() -> None:
    grey = images(8).unsqueeze(1).expand(8, 3, 28, 28).contiguous()
    cfg = make_config("seed")
    out = denormalize(augment(grey, cfg, gen()), cfg)
    torch.testing.assert_close(out[:, 0], out[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1], out[:, 2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("cfg", [only(jitter_p=1.0, brightness=0.0, contrast=0.0, hue=0.0),
                                 only(jitter_p=1.0, brightness=0.0, contrast=0.0, saturation=0.0),
                                 only(grayscale_p=0.5)], ids=["saturation", "hue", "grayscale"])
def test_colour_ops_draw_per_sample(cfg: AugmentConfig) -> None:
    x = colour_images(1).expand(64, 3, 32, 32).contiguous()
    cfg = dataclasses.replace(cfg, size=32)
    out = augment(x, cfg, gen())
    assert n_distinct(out) == (2 if cfg.grayscale_p else 64)
    if cfg.grayscale_p:  # about half of the views turned grey
        turned = (out[:, 0] == out[:, 1]).flatten(1).all(1)
        assert 0.3 < turned.float().mean() < 0.7


def test_each_colour_view_depends_only_on_its_image_and_draws() -> None:
    x = to_float(colour_images(16))
    cfg = make_config(jitter_p=1.0, blur_p=1.0, grayscale_p=0.5)
    u = torch.rand((16, _N_DRAWS + _N_COLOUR_DRAWS), generator=gen(1))
    batch = _augment_with(x.clone(), cfg, u)
    for i in (0, 7, 15):
        alone = _augment_with(x[i : i + 1].clone(), cfg, u[i : i + 1])
        torch.testing.assert_close(alone, batch[i : i + 1], atol=1e-5, rtol=0)


def test_grey_images_draw_no_colour_numbers() -> None:
    """Grey runs replay the random streams they drew before colour existed."""
    x, cfg = images(8), make_config("default")
    generator = gen(3)
    out = augment(x, cfg, generator)
    expected = _augment_with(to_float(x), cfg, torch.rand((8, _N_DRAWS), generator=gen(3)))
    torch.testing.assert_close(out, expected)
