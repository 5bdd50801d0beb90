"""Batched random augmentations for self-supervised views of grey or colour images.

Everything runs on whole batches (no per-image Python loops) on the images' device, and every
random parameter is drawn per sample from an explicit ``torch.Generator``, so a run is
reproducible from its seed and never touches the global RNG.

Saturation, hue and random grayscale change only colour images: on 1-channel images they would do
nothing, so they are skipped there, and grey images draw exactly the random numbers they drew
before colour existed (a grey run replays bitwise).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fashionssl.data import DataInfo
from fashionssl.errors import UserError

# Uniform draws per image, one column each: crop area, crop log-ratio, crop x, crop y, flip,
# jitter on/off, brightness, contrast, blur on/off, blur sigma; colour images add saturation, hue
# and grayscale on/off; erasing, where it is on, adds erase on/off, area, log-ratio, x and y. Drawn
# in one call so that row i holds everything image i needs, whatever the batch around it.
_N_DRAWS = 10
_N_COLOUR_DRAWS = 3
_N_ERASE_DRAWS = 5
# ITU-R BT.601 luma weights, as torchvision's rgb_to_grayscale: the grey that saturation 0 and
# random grayscale give.
_LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of one augmentation pipeline; validated on construction so bad TOML/CLI
    values fail early with the option's name rather than deep inside a training step.

    saturation, hue and grayscale_p act on colour images only. The defaults of mean, std and size
    are Fashion-MNIST's; `make_config` puts the data's own in their place.
    """

    # Area fraction range of random resized crop. [0.4, 1] was chosen on the validation split
    # (benchmarks/sweeps/recipe.toml); the documented runs before 2026-12-04 used [0.2, 1].
    crop_scale: tuple[float, float] = (0.4, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)  # aspect ratio range, sampled log-uniformly
    flip_p: float = 0.5  # horizontal flip probability
    jitter_p: float = 0.8  # probability of applying brightness+contrast jitter
    brightness: float = 0.4  # factor ~ U[1-b, 1+b]
    contrast: float = 0.4  # factor ~ U[1-c, 1+c], blend with the per-image mean
    blur_p: float = 0.5  # probability of Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_kernel: int = 3  # odd
    saturation: float = 0.4  # colour only, with the jitter: factor ~ U[1-s, 1+s], blend with the grey image
    hue: float = 0.1  # colour only, with the jitter: rotation by U[-h, h] of a turn around the grey axis
    grayscale_p: float = 0.2  # colour only: probability of turning the view grey
    erase_p: float = 0.0  # probability of random erasing (a rectangle set to the data's mean)
    erase_scale: tuple[float, float] = (0.02, 0.33)  # erased area fraction range (torchvision's)
    erase_ratio: tuple[float, float] = (0.3, 3.3)  # erased aspect ratio range, sampled log-uniformly
    mean: float | tuple[float, ...] = 0.2860  # of [0,1] pixels: one for all channels, or one per channel
    std: float | tuple[float, ...] = 0.3530
    size: int = 28  # output side (multi-crop uses smaller sizes)

    def __post_init__(self) -> None:
        for name in ("crop_scale", "crop_ratio", "blur_sigma", "erase_scale", "erase_ratio"):
            object.__setattr__(self, name, _pair(name, getattr(self, name)))
        for name in ("crop_scale", "erase_scale"):
            lo, hi = getattr(self, name)
            _check(name, 0 < lo <= hi <= 1, "must be [lo, hi] with 0 < lo <= hi <= 1", lo, hi)
        for name in ("crop_ratio", "erase_ratio"):
            lo, hi = getattr(self, name)
            _check(name, 0 < lo <= hi < math.inf, "must be [lo, hi] with 0 < lo <= hi, finite", lo, hi)
        lo, hi = self.blur_sigma
        _check("blur_sigma", 0 < lo <= hi < math.inf, "must be [lo, hi] with 0 < lo <= hi, finite", lo, hi)
        for name in ("flip_p", "jitter_p", "blur_p", "grayscale_p", "erase_p"):
            value = _number(name, getattr(self, name))
            _check(name, 0 <= value <= 1, "is a probability: must be between 0 and 1", value)
        for name in ("brightness", "contrast", "saturation"):
            value = _number(name, getattr(self, name))
            _check(name, 0 <= value <= 1, "must be between 0 and 1 (factor range 1 +- it)", value)
        hue = _number("hue", self.hue)
        _check("hue", 0 <= hue <= 0.5, "must be between 0 and 0.5 (a fraction of a turn either way)", hue)
        for name, ok, rule in (("mean", math.isfinite, "finite numbers"), ("std", lambda v: 0 < v < math.inf,
                                                                          "positive finite numbers")):
            values = _per_channel(name, getattr(self, name))
            _check(name, all(map(ok, values)), f"must be {rule}, one or one per channel", getattr(self, name))
            object.__setattr__(self, name, values if len(values) > 1 else values[0])
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


def _per_channel(name: str, value: object) -> tuple[float, ...]:
    """A number, or a list of 1 or 3 (one per channel; TOML has no tuples), as a tuple."""
    values = value if isinstance(value, (list, tuple)) else [value]
    _check(name, len(values) in (1, 3), "must be a number or a list of one per channel", value)
    return tuple(_number(name, v) for v in values)


def _pair(name: str, value: object) -> tuple[float, float]:
    """TOML has no tuples, so accept any 2-sequence and store a tuple (keeps the config hashable)."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    _check(name, ok, "must be a pair [lo, hi]", value)
    return (_number(name, value[0]), _number(name, value[1]))  # type: ignore[index]


# The presets' values; what a preset leaves out is AugmentConfig's default, or the data's own for
# mean, std and size (see make_config).
PRESETS: dict[str, dict[str, object]] = {
    # The reference blog's recipe. Its normalisation constants are MNIST's, kept as the blog had
    # them so results stay comparable.
    "seed": dict(
        crop_scale=(0.7, 1.0),
        flip_p=0.5,
        jitter_p=0.8,
        brightness=0.4,
        contrast=0.4,
        saturation=0.4,
        hue=0.1,
        grayscale_p=0.2,
        blur_p=1.0,
        blur_sigma=(0.1, 2.0),
        blur_kernel=3,
        mean=0.1307,
        std=0.3081,
    ),
    # Ours; crop_scale and friends get tuned on the validation split.
    "default": {},
    # Every op off: augment() == normalize(), which makes it the no-augmentation baseline.
    "none": dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter_p=0.0, blur_p=0.0, grayscale_p=0.0),
}


def make_config(preset: str = "default", data: DataInfo | None = None, **overrides: object) -> AugmentConfig:
    """Preset by name plus field overrides (from a TOML table or CLI). With `data`, its mean, std
    and size take the place of the defaults (a preset's or an override's values still win).

    Unknown preset or override key -> UserError listing the valid ones. Lists given for tuple
    fields (TOML has no tuples) become tuples.
    """
    if preset not in PRESETS:
        raise UserError(f"augment preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    keys = [field.name for field in dataclasses.fields(AugmentConfig)]
    unknown = sorted(set(overrides) - set(keys))
    if unknown:
        raise UserError(f"augment option(s) {', '.join(unknown)} unknown; valid options: {', '.join(keys)}")
    from_data = {} if data is None else {"mean": data.mean, "std": data.std, "size": data.size}
    cfg = AugmentConfig(**{**from_data, **PRESETS[preset], **overrides})  # type: ignore[arg-type]
    if data is not None:
        for name in ("mean", "std"):
            given = getattr(cfg, name)
            _check(name, isinstance(given, float) or len(given) == data.channels,
                   f"needs one value or {data.channels} (one per channel of the data)", given)
    return cfg


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B,H,W), (B,1,H,W) or (B,3,H,W) -> float32 (B,C,H,W) in [0,1]."""
    channels = images.shape[1] if images.dim() == 4 else 1
    if images.dtype != torch.uint8 or images.dim() not in (3, 4) or channels not in (1, 3):
        raise ValueError(f"expected uint8 images (B,H,W) or (B,C,H,W) with C = 1 or 3, got {images.dtype} "
                         f"{tuple(images.shape)}")
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.to(torch.float32).div_(255)


def per_channel(value: float | tuple[float, ...], x: torch.Tensor) -> torch.Tensor:
    """A config's mean or std as a (1, C or 1, 1, 1) tensor that broadcasts over `x`'s batch."""
    return torch.tensor(value, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)


def _standardize(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    return x.sub_(per_channel(cfg.mean, x)).div_(per_channel(cfg.std, x))


def normalize(images: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """The evaluation transform: uint8 (B,H,W)/(B,C,H,W) -> float (B,C,H,W), (x/255 - mean)/std."""
    return _standardize(to_float(images), cfg)


def denormalize(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """normalize's inverse, back to [0, 1] (for pictures of views)."""
    return (x * per_channel(cfg.std, x) + per_channel(cfg.mean, x)).clamp(0, 1)


def augment(images: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: uint8 (B,H,W) or (B,C,H,W) on any device -> float32
    (B,C,cfg.size,cfg.size), normalised like normalize().

    ``generator`` must live on the images' device. Pipeline, each op with its own per-sample draws:

    1. Random resized crop + horizontal flip, fused into one bilinear resampling. Area fraction
       and log aspect ratio are sampled as in torchvision's RandomResizedCrop, but once per image:
       where the crop would leave the image it is clamped to the image's width/height instead of
       torchvision's 10-try rejection loop. The crop is not rounded to whole pixels, and
       shrinking (cfg.size smaller than the crop) is not antialiased.
    2. With probability jitter_p: brightness (x * b) and contrast (blend with the per-image mean
       by c); on colour images also saturation (blend with the grey image by s) and hue (a
       rotation of RGB space about the grey axis, see `_hue_rotation`); then clamp to [0, 1].
       Clamping only once, at the end, makes brightness and contrast commute with each other and
       with the colour ops (which keep grey pixels grey), so there is no order to randomise
       (torchvision clamps after each op; the results differ only where pixels leave [0, 1]).
    3. Colour images, with probability grayscale_p: the grey image in every channel.
    4. With probability blur_p: Gaussian blur, per-sample sigma, reflect padding.
    5. With probability erase_p: random erasing (Zhong et al., 2020), see `_erase`.

    An op whose probability is 0 (or a crop with scale = ratio = 1 at the input size, no flip)
    costs nothing, so the "none" preset is exactly normalize().
    """
    x = to_float(images)
    colour = x.shape[1] == 3
    columns = _N_DRAWS + colour * _N_COLOUR_DRAWS + (cfg.erase_p > 0) * _N_ERASE_DRAWS
    return _augment_with(x, cfg, torch.rand((x.shape[0], columns), generator=generator, device=x.device))


def _augment_with(x: torch.Tensor, cfg: AugmentConfig, draws: torch.Tensor) -> torch.Tensor:
    """augment() on float (B,C,H,W) in [0,1] given its (B, _N_DRAWS [+ _N_COLOUR_DRAWS]) uniform
    draws; split out so tests can check that image i's view depends only on image i and row i of
    the draws. ``x`` may be overwritten."""
    area, log_ratio, pos_x, pos_y, flip, jitter, bright, contrast, blur, sigma = draws[:, :_N_DRAWS].unbind(1)
    height, width = x.shape[-2:]
    crop_is_identity = cfg.crop_scale == (1.0, 1.0) and cfg.crop_ratio == (1.0, 1.0) and height == width == cfg.size
    if not crop_is_identity or cfg.flip_p > 0:
        x = _crop_flip(x, cfg, area, log_ratio, pos_x, pos_y, flip < cfg.flip_p)
    colour = x.shape[1] == 3
    if cfg.jitter_p > 0:
        apply = jitter < cfg.jitter_p
        matrix = _colour_matrix(cfg, apply, draws[:, _N_DRAWS], draws[:, _N_DRAWS + 1]) if colour else None
        x = _jitter(x, cfg, apply, bright, contrast, matrix)
    if colour and cfg.grayscale_p > 0:
        x = torch.where((draws[:, _N_DRAWS + 2] < cfg.grayscale_p).view(-1, 1, 1, 1), _grey(x).expand_as(x), x)
    if cfg.blur_p > 0:
        x = _blur(x, cfg, blur < cfg.blur_p, sigma)
    if cfg.erase_p > 0:
        erase, area, log_ratio, pos_x, pos_y = draws[:, _N_DRAWS + colour * _N_COLOUR_DRAWS:].unbind(1)
        x = _erase(x, cfg, erase < cfg.erase_p, area, log_ratio, pos_x, pos_y)
    return _standardize(x, cfg)


def _lerp(lo: float, hi: float, u: torch.Tensor) -> torch.Tensor:
    return lo + (hi - lo) * u


def _box_sides(scale: tuple[float, float], ratio_range: tuple[float, float], area: torch.Tensor,
               log_ratio: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample width and height, as fractions of the image's, of a box whose area fraction is drawn
    from `scale` and whose aspect ratio (width / height, in pixels) log-uniformly from `ratio_range`,
    as torchvision's RandomResizedCrop and RandomErasing draw them; clamped to the image's sides."""
    area = _lerp(*scale, area)
    ratio = torch.exp(_lerp(math.log(ratio_range[0]), math.log(ratio_range[1]), log_ratio))
    # w_px * h_px = area * H * W, w_px / h_px = ratio.
    return (torch.sqrt(area * ratio * (height / width)).clamp_(max=1),
            torch.sqrt(area / ratio * (width / height)).clamp_(max=1))


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
    crop_w, crop_h = _box_sides(cfg.crop_scale, cfg.crop_ratio, area, log_ratio, height, width)
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
    x: torch.Tensor, cfg: AugmentConfig, apply: torch.Tensor, bright: torch.Tensor, contrast: torch.Tensor,
    colour: torch.Tensor | None = None,
) -> torch.Tensor:
    # b * (c * x + (1 - c) * mean) as one per-sample affine map; unselected samples get b = c = 1.
    b = torch.where(apply, _lerp(1 - cfg.brightness, 1 + cfg.brightness, bright), 1.0)
    c = torch.where(apply, _lerp(1 - cfg.contrast, 1 + cfg.contrast, contrast), 1.0)
    mean = x.mean(dim=(1, 2, 3))
    scale = (b * c).view(-1, 1, 1, 1)
    shift = (b * (1 - c) * mean).view(-1, 1, 1, 1)
    if colour is not None:  # (B, 3, 3) per-sample colour maps; they keep grey grey, so the shift is untouched
        x = torch.einsum("bij,bjhw->bihw", colour, x)
    return torch.addcmul(shift, x, scale).clamp_(0, 1)


def _grey(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) luma."""
    return torch.einsum("c,bchw->bhw", torch.tensor(_LUMA, dtype=x.dtype, device=x.device), x).unsqueeze(1)


def _colour_matrix(cfg: AugmentConfig, apply: torch.Tensor, saturation: torch.Tensor,
                   hue: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) per-sample RGB maps: saturation, then hue; identity where `apply` is False."""
    s = torch.where(apply, _lerp(1 - cfg.saturation, 1 + cfg.saturation, saturation), 1.0)
    h = torch.where(apply, _lerp(-cfg.hue, cfg.hue, hue), 0.0)
    luma = torch.tensor(_LUMA, dtype=s.dtype, device=s.device)
    eye = torch.eye(3, dtype=s.dtype, device=s.device)
    # s * x + (1 - s) * grey(x), grey(x) = luma . x in every channel
    saturate = s.view(-1, 1, 1) * eye + (1 - s).view(-1, 1, 1) * luma.expand(3, 3)
    return _hue_rotation(h) @ saturate


def _hue_rotation(turns: torch.Tensor) -> torch.Tensor:
    """(B,) fractions of a turn -> (B, 3, 3) rotations of RGB space about the grey axis (1, 1, 1).

    Rodrigues' formula, R = cos(a) I + sin(a) K + (1 - cos(a)) k k^T with k the unit grey axis and
    K its cross-product matrix: a linear, batched stand-in for HSV's hue shift, which turns the
    colour wheel the same way (red -> green -> blue) and likewise keeps grey pixels unchanged."""
    angle = 2 * math.pi * turns
    k = torch.full((3,), 1 / math.sqrt(3), dtype=turns.dtype, device=turns.device)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], dtype=turns.dtype,
                         device=turns.device) / math.sqrt(3)
    cos, sin = angle.cos().view(-1, 1, 1), angle.sin().view(-1, 1, 1)
    return cos * torch.eye(3, dtype=turns.dtype, device=turns.device) + sin * cross + (1 - cos) * torch.outer(k, k)


def _blur(x: torch.Tensor, cfg: AugmentConfig, apply: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    # Unselected samples get the kernel [0, .., 1, .., 0], which reproduces them exactly; one
    # grouped conv over the batch's channels then blurs everything in a single call.
    batch, channels, height, width = x.shape
    half = cfg.blur_kernel // 2
    taps = torch.arange(-half, half + 1, device=x.device, dtype=x.dtype)
    sigma = _lerp(*cfg.blur_sigma, sigma)
    kernel = torch.exp(-(taps**2) / (2 * sigma[:, None] ** 2))
    kernel = torch.where(apply[:, None], kernel / kernel.sum(1, keepdim=True), (taps == 0).to(x.dtype))
    kernel = kernel.repeat_interleave(channels, dim=0)  # one per (image, channel)
    groups = batch * channels
    padded = F.pad(x.reshape(1, groups, height, width), (half, half, half, half), mode="reflect")
    rows = F.conv2d(padded, kernel.view(groups, 1, 1, -1), groups=groups)
    return F.conv2d(rows, kernel.view(groups, 1, -1, 1), groups=groups).view(batch, channels, height, width)


def _erase(
    x: torch.Tensor,
    cfg: AugmentConfig,
    apply: torch.Tensor,
    area: torch.Tensor,
    log_ratio: torch.Tensor,
    pos_x: torch.Tensor,
    pos_y: torch.Tensor,
) -> torch.Tensor:
    """Random erasing: where `apply`, the pixels whose centres fall in a rectangle of erase_scale of
    the image's area (aspect ratio in erase_ratio, clamped to the image, anywhere inside it) take the
    data's mean, which standardises to 0: torchvision's RandomErasing(value=0) after Normalize, but
    with one draw per image where torchvision tries up to 10 times."""
    height, width = x.shape[-2:]
    erase_w, erase_h = _box_sides(cfg.erase_scale, cfg.erase_ratio, area, log_ratio, height, width)
    erase_w, erase_h = erase_w * width, erase_h * height
    top, left = pos_y * (height - erase_h), pos_x * (width - erase_w)
    centres_y = torch.arange(height, device=x.device, dtype=x.dtype) + 0.5
    centres_x = torch.arange(width, device=x.device, dtype=x.dtype) + 0.5
    rows = (centres_y >= top[:, None]) & (centres_y < (top + erase_h)[:, None])  # (B, H)
    cols = (centres_x >= left[:, None]) & (centres_x < (left + erase_w)[:, None])  # (B, W)
    mask = apply[:, None, None, None] & rows[:, None, :, None] & cols[:, None, None, :]  # (B, 1, H, W)
    return torch.where(mask, per_channel(cfg.mean, x), x)


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
    """The views `spec` asks for, as a list: spec.global_views (B,C,cfg.size,cfg.size) tensors, then
    spec.local_views (B,C,local_size,local_size) ones.

    One augment() call per kind on the batch repeated: one set of kernel launches instead of one
    per view. Global views are drawn first, so they do not depend on how many local views follow.
    """
    batch, ones = images.shape[0], [1] * (images.dim() - 1)
    out = list(augment(images.repeat(spec.global_views, *ones), cfg, generator).split(batch))
    if spec.local_views:
        local = dataclasses.replace(cfg, crop_scale=spec.local_scale, size=spec.local_size)
        out += augment(images.repeat(spec.local_views, *ones), local, generator).split(batch)
    return out
