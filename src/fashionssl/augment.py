"""Batched random augmentations for self-supervised views of Fashion-MNIST images.

Everything runs on whole batches (no per-image Python loops) on the images' device, and every
random parameter is drawn per sample from an explicit ``torch.Generator``, so a run is
reproducible from its seed and never touches the global RNG.

The reference recipe (torchvision, per image) also had saturation, hue and random grayscale:
on 1-channel images those do nothing, so they are not implemented.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fashionssl.errors import UserError

# Uniform draws per image, one column each: crop area, crop log-ratio, crop x, crop y, flip,
# jitter on/off, brightness, contrast, blur on/off, blur sigma. Drawn in one call so that row i
# holds everything image i needs, whatever the batch around it.
_N_DRAWS = 10


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of one augmentation pipeline; validated on construction so bad TOML/CLI
    values fail early with the option's name rather than deep inside a training step.

    There is no saturation, hue or random grayscale: on 1-channel images they do nothing.
    """

    crop_scale: tuple[float, float] = (0.2, 1.0)  # area fraction range of random resized crop
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range, sampled log-uniformly
    flip_p: float = 0.5  # horizontal flip probability
    jitter_p: float = 0.8  # probability of applying brightness+contrast jitter
    brightness: float = 0.4  # factor ~ U[1-b, 1+b]
    contrast: float = 0.4  # factor ~ U[1-c, 1+c], blend with the per-image mean
    blur_p: float = 0.5  # probability of Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 3  # odd
    mean: float = 0.2860  # Fashion-MNIST train mean/std of [0,1] pixels
    std: float = 0.3530
    size: int = 28  # output side (multi-crop uses smaller sizes)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "blur_sigma"):
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        lo, hi = self.crop_scale
        _check("crop_scale", 0 < lo <= hi <= 1, "must be [lo, hi] with 0 < lo <= hi <= 1", lo, hi)
        lo, hi = self.crop_ratio
        _check("crop_ratio", 0 < lo <= hi < math.inf, "must be [lo, hi] with 0 < lo <= hi, finite", lo, hi)
        lo, hi = self.blur_sigma
        _check("blur_sigma", 0 < lo <= hi < math.inf, "must be [lo, hi] with 0 < lo <= hi, finite", lo, hi)
        for name in ("flip_p", "jitter_p", "blur_p"):
            value = _number(name, getattr(self, name))
            _check(name, 0 <= value <= 1, "is a probability: must be between 0 and 1", value)
        for name in ("brightness", "contrast"):
            value = _number(name, getattr(self, name))
            _check(name, 0 <= value <= 1, "must be between 0 and 1 (factor range 1 +- it)", value)
        mean = _number("mean", self.mean)
        _check("mean", math.isfinite(mean), "must be a finite number", mean)
        std = _number("std", self.std)
        _check("std", 0 < std < math.inf, "must be a positive finite number", std)
        size = _integer("size", self.size)
        _check("size", size >= 1, "must be an integer >= 1", size)
        kernel = _integer("blur_kernel", self.blur_kernel)
        _check("blur_kernel", kernel >= 1 and kernel % 2 == 1, "must be an odd integer >= 1", kernel)
        # Reflect padding needs the pad (kernel // 2) to be smaller than the image side.
        _check("blur_kernel", kernel // 2 < size, f"must be < 2 * size (size = {size})", kernel)


def _check(name: str, ok: bool, rule: str, *values: object) -> None:
    if not ok:
        got = values[0] if len(values) == 1 else list(values)
        raise UserError(f"augment option {name}: {rule}, got {got!r}; fix it in the config or CLI")


def _number(name: str, value: object) -> float:
    # bool is an int subclass; `flip_p = true` is a mistake, not 1.0.
    _check(name, isinstance(value, (int, float)) and not isinstance(value, bool), "must be a number", value)
    return float(value)  # type: ignore[arg-type]


def _integer(name: str, value: object) -> int:
    _check(name, isinstance(value, int) and not isinstance(value, bool), "must be an integer", value)
    return int(value)  # type: ignore[arg-type]


def _pair(name: str, value: object) -> tuple[float, float]:
    """TOML has no tuples, so accept any 2-sequence and store a tuple (keeps the config hashable)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    _check(name, ok, "must be a pair [lo, hi]", value)
    return (_number(name, value[0]), _number(name, value[1]))  # type: ignore[index]


PRESETS: dict[str, AugmentConfig] = {
    # The reference blog's recipe, restricted to what exists on 1 channel. Its normalisation
    # constants are MNIST's, kept as the blog had them so results stay comparable.
    "seed": AugmentConfig(
        crop_scale=(0.7, 1.0),
        flip_p=0.5,
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        blur_p=1.0,
        blur_sigma=(0.1, 2.0),
        blur_kernel=3,
        mean=0.1307,
        std=0.3081,
    ),
    # Ours; crop_scale and friends get tuned on the validation split.
    "default": AugmentConfig(),
    # Every op off: augment() == normalize(), which makes it the no-augmentation baseline.
    "none": AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, blur_p=0.0),
}


def make_config(preset: str = "default", **overrides: object) -> AugmentConfig:
    """Preset by name plus field overrides (from a TOML table or CLI).

    Unknown preset or override key -> UserError listing the valid ones. Lists given for tuple
    fields (TOML has no tuples) become tuples.
    """
    if preset not in PRESETS:
        raise UserError(f"augment preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    keys = [field.name for field in dataclasses.fields(AugmentConfig)]
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        raise UserError(f"augment option(s) {', '.join(unknown)} unknown; valid options: {', '.join(keys)}")
    return dataclasses.replace(PRESETS[preset], **overrides)  # type: ignore[arg-type]


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W) or (B,1,H,W) -> float32 (B,1,H,W) in [0,1]."""
    if images.dtype != torch.uint8 or images.dim() not in (3, 4) or (images.dim() == 4 and images.shape[1] != 1):
        raise ValueError(f"expected uint8 images (B,H,W) or (B,1,H,W), got {images.dtype} {tuple(images.shape)}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.to(torch.float32).div_(255)


def _standardize(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    return x.sub_(cfg.mean).div_(cfg.std)


def normalize(images: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """The evaluation transform: uint8 (B,H,W)/(B,1,H,W) -> float (B,1,H,W), (x/255 - mean)/std."""
    return _standardize(to_float(images), cfg)


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: uint8 (B,H,W) or (B,1,H,W) on any device -> float32
    (B,1,cfg.size,cfg.size), normalised like normalize().

    ``generator`` must live on the images' device. Pipeline, each op with its own per-sample draws:

    1. Random resized crop + horizontal flip, fused into one bilinear resampling. Area fraction
       and log aspect ratio are sampled as in torchvision's RandomResizedCrop, but once per image:
       where the crop would leave the image it is clamped to the image's width/height instead of
       torchvision's 10-try rejection loop. The crop is not rounded to whole pixels, and
       shrinking (cfg.size smaller than the crop) is not antialiased.
    2. With probability jitter_p: brightness (x * b) and contrast (blend with the per-image mean
       by c), then clamp to [0, 1]. Clamping only once, at the end, makes the two ops commute,
       so there is no order to randomise (torchvision clamps after each op; the results differ
       only where brightness pushes pixels past 1).
    3. With probability blur_p: Gaussian blur, per-sample sigma, reflect padding.

    An op whose probability is 0 (or a crop with scale = ratio = 1 at the input size, no flip)
    costs nothing, so the "none" preset is exactly normalize().
    """
    x = to_float(images)
    draws = torch.rand((x.shape[0], _N_DRAWS), generator=generator, device=x.device)
    return _augment_with(x, cfg, draws)


def _augment_with(x: torch.Tensor, cfg: AugmentConfig, draws: torch.Tensor) -> torch.Tensor:
    """augment() on float (B,1,H,W) in [0,1] given its (B, _N_DRAWS) uniform draws; split out so
    tests can check that image i's view depends only on image i and row i of the draws.
    ``x`` may be overwritten."""
    area, log_ratio, pos_x, pos_y, flip, jitter, bright, contrast, blur, sigma = draws.unbind(1)
    height, width = x.shape[-2:]
    crop_is_identity = cfg.crop_scale == (1.0, 1.0) and cfg.crop_ratio == (1.0, 1.0) and height == width == cfg.size
    if not crop_is_identity or cfg.flip_p > 0:
        x = _crop_flip(x, cfg, area, log_ratio, pos_x, pos_y, flip < cfg.flip_p)
    if cfg.jitter_p > 0:
        x = _jitter(x, cfg, jitter < cfg.jitter_p, bright, contrast)
    if cfg.blur_p > 0:
        x = _blur(x, cfg, blur < cfg.blur_p, sigma)
    return _standardize(x, cfg)


def _lerp(lo: float, hi: float, u: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * u


def _crop_flip(
    x: torch.Tensor,
    cfg: AugmentConfig,
    area: torch.Tensor,
    log_ratio: torch.Tensor,
    pos_x: torch.Tensor,
    pos_y: torch.Tensor,
    flip: torch.Tensor,
) -> torch.Tensor:
    height, width = x.shape[-2:]
    area = _lerp(*cfg.crop_scale, area)
    ratio = torch.exp(_lerp(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), log_ratio))
    # Crop width/height as fractions of the image's: w_px * h_px = area * H * W, w_px / h_px = ratio.
    crop_w = torch.sqrt(area * ratio * (height / width)).clamp_(max=1)
    crop_h = torch.sqrt(area / ratio * (width / height)).clamp_(max=1)
    # grid_sample reads input coords in [-1, 1]: output pixel centres scaled by the crop size
    # (mirrored for flipped samples) plus a crop centre anywhere that keeps the crop inside.
    # The map is axis-aligned, so the grid is built by broadcasting; F.affine_grid gives the same
    # grid but costs twice as much as grid_sample itself on CPU.
    out = torch.arange(cfg.size, device=x.device, dtype=x.dtype).mul_(2 / cfg.size).add_(1 / cfg.size - 1)
    grid_x = torch.where(flip, -crop_w, crop_w)[:, None] * out + ((1 - crop_w) * (2 * pos_x - 1))[:, None]
    grid_y = crop_h[:, None] * out + ((1 - crop_h) * (2 * pos_y - 1))[:, None]
    grid = torch.stack(torch.broadcast_tensors(grid_x[:, None, :], grid_y[:, :, None]), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _jitter(
    x: torch.Tensor, cfg: AugmentConfig, apply: torch.Tensor, bright: torch.Tensor, contrast: torch.Tensor
) -> torch.Tensor:
    # b * (c * x + (1 - c) * mean) as one per-sample affine map; unselected samples get b = c = 1.
    b = torch.where(apply, _lerp(1 - cfg.brightness, 1 + cfg.brightness, bright), 1.0)
    c = torch.where(apply, _lerp(1 - cfg.contrast, 1 + cfg.contrast, contrast), 1.0)
    mean = x.mean(dim=(1, 2, 3))
    scale = (b * c).view(-1, 1, 1, 1)
    shift = (b * (1 - c) * mean).view(-1, 1, 1, 1)
    return torch.addcmul(shift, x, scale).clamp_(0, 1)


def _blur(x: torch.Tensor, cfg: AugmentConfig, apply: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # Unselected samples get the kernel [0, .., 1, .., 0], which reproduces them exactly; one
    # grouped conv over the batch-as-channels then blurs everything in a single call.
    batch, _, height, width = x.shape
    half = cfg.blur_kernel // 2
    taps = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    sigma = _lerp(*cfg.blur_sigma, sigma)
    kernel = torch.exp(-(taps**2) / (2 * sigma[:, None] ** 2))
    kernel = torch.where(apply[:, None], kernel / kernel.sum(1, keepdim=True), (taps == 0).to(x.dtype))
    padded = F.pad(x.reshape(1, batch, height, width), (half, half, half, half), mode="reflect")
    rows = F.conv2d(padded, kernel.view(batch, 1, 1, -1), groups=batch)
    return F.conv2d(rows, kernel.view(batch, 1, -1, 1), groups=batch).view(batch, 1, height, width)


@dataclass(frozen=True)
class ViewSpec:
    """Which views of each image a method wants: `global_views` at the configured size and crop
    scale, then `local_views` small crops (multi-crop, Caron et al., 2020) of `local_size` pixels
    covering `local_scale` of the image's area. Methods declare one; the loop passes it to views().
    """

    global_views: int = 2
    local_views: int = 0
    local_size: int = 16
    local_scale: tuple[float, float] = (0.05, 0.4)


def views(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator,
          spec: ViewSpec = ViewSpec()) -> list[torch.Tensor]:
    """The views `spec` asks for, as a list: spec.global_views (B,1,cfg.size,cfg.size) tensors, then
    spec.local_views (B,1,local_size,local_size) ones.

    One augment() call per kind on the batch repeated: one set of kernel launches instead of one
    per view. Global views are drawn first, so they do not depend on how many local views follow.
    """
    batch, ones = images.shape[0], [1] * (images.dim() - 1)
    out = list(augment(images.repeat(spec.global_views, *ones), cfg, generator).split(batch))
    if spec.local_views:
        local = dataclasses.replace(cfg, crop_scale=spec.local_scale, size=spec.local_size)
        out += augment(images.repeat(spec.local_views, *ones), local, generator).split(batch)
    return out
