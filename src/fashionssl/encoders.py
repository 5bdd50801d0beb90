"""Backbones by name. Each maps (B, C, S, S) images to (B, feature_dim) features; `build_encoder`
takes the channels C (1 grey, 3 colour) and the side S (28 to 64) from the data. On 28x28 grey
images every encoder is exactly the architecture described below.

`cnn` is the reference blog's encoder (three 3x3 conv + max-pool stages and a 256-d linear layer),
kept as the architecture every speed comparison is made with. `cnn-bn` is the same convolutional
trunk with BatchNorm after each convolution (which contrastive training on this data needs to learn
fast) and without the linear layer: its representation is the 128x3x3 = 1152-d conv feature map, as
SimCLR takes the representation before any fully connected layer (a linear layer there is just the
first layer of the projection head, which the loss makes invariant to what augmentation changed).
Measured once on an earlier SimCLR checkpoint that still had the linear layer (docs/benchmarks.md): the linear probe scores 90.6% on the conv features and 89.1%
on the 256-d linear layer's output. `cnn-bn-wide` doubles every stage's channels (64-128-256, 2304-d
features, 4x the multiply-adds): a new encoder for the recipe search, not a change of `cnn-bn`.
`cnn-bn-wide-4x4` is `cnn-bn-wide` whose last max-pool keeps the 7x7 map's last row and column
(ceil mode: 7 -> 4, where 7 -> 3 drops 13 of its 49 positions), 4096-d features. `resnet18` is the usual ResNet-18 with the CIFAR-style stem
(3x3 conv, stride 1, no max-pool) that small images need. `vit-tiny` is a small Vision Transformer
(Dosovitskiy et al., 2021) whose representation is the CLS token, with `cls_attention` for pictures.

Every encoder also takes the smaller crops of multi-crop methods (e.g. 16x16) and gives them features
of the same size: ResNet pools globally, ConvNet pools its last map to 3x3, the ViT interpolates
its position embeddings.
"""

from collections.abc import Callable

import math

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError
from .kernels import max_pool_relu

# The largest input patch (in_channels x kernel area) whose BatchNorm statistics conv_bn computes from
# the input: a first layer on grey (9) or colour (27) images, never a layer inside the network.
FOLD_MAX_PATCH = 27


def conv_patches(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """The input patches `conv` multiplies with its weights, of an already padded x: (B, C * kh * kw, L),
    ordered as F.unfold orders them. Stacked from kh * kw strided slices of a contiguous copy: faster
    than F.unfold, which took most of conv_bn's forward; conv_bn's forward and backward on 1024 views
    of 28x28 took 6.5 ms less at width 32 (49.8 against 56.3 ms; 2-core "Intel(R) Xeon(R) Processor",
    2026-12-06, docs/benchmarks.md "The patches from slices")."""
    x = x.contiguous()
    (kh, kw), (dh, dw), (sh, sw) = conv.kernel_size, conv.dilation, conv.stride
    rows, cols = (x.shape[2] - dh * (kh - 1) - 1) // sh + 1, (x.shape[3] - dw * (kw - 1) - 1) // sw + 1
    slices = [x[:, :, i * dh:i * dh + (rows - 1) * sh + 1:sh, j * dw:j * dw + (cols - 1) * sw + 1:sw]
              for i in range(kh) for j in range(kw)]
    return torch.stack(slices, 2).flatten(1, 2).flatten(2)


def conv_bn(conv: nn.Conv2d, bn: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """bn(conv(x)), exactly, with training-mode BatchNorm folded into the convolution where the
    convolution's input patches are small (an encoder's first layer).

    BatchNorm's batch statistics of y = w . p + c over every patch p of the batch are moments of the
    patches: mean w . E[p] + c and variance w^T Cov(p) w, where Cov(p) is only 9x9 for a 3x3 kernel on
    grey images. So BN(y) = (gamma / sigma) w . p + beta - (gamma / sigma) w . E[p]: one convolution
    with rescaled weights gives the normalised maps, and the separate BatchNorm passes over the
    layer's output (the network's largest maps: 64 x 28 x 28 per view in `cnn-bn-wide`), forward and
    backward, are gone. The same function of x, w, gamma and beta, so autograd gives the same
    gradients; the running statistics move as BatchNorm moves them. Elsewhere (eval mode, our
    SyncBatchNorm, large patches) it is plain bn(conv(x)).

    Moments, statistics and the folded weights are computed in at least float32 outside autocast
    (in bf16 the variance would lose most of its digits); the convolution itself runs as autocast says.
    """
    patch = conv.in_channels * math.prod(conv.kernel_size)
    if not (bn.training and type(bn) is nn.BatchNorm2d and bn.affine and bn.track_running_stats
            and bn.momentum is not None and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str) and patch <= FOLD_MAX_PATCH):
        return bn(conv(x))
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        # Patches of the zero-padded input, less each channel's mean (padding included, so the
        # padded zeros become -mean): the moments' large terms then do not cancel in float32.
        channel_mean = xf.mean(dim=(0, 2, 3)).view(1, -1, 1, 1)
        pad_w, pad_h = conv.padding[1], conv.padding[0]
        shifted = F.pad(xf, (pad_w, pad_w, pad_h, pad_h)) - channel_mean
        patches = conv_patches(shifted, conv)  # (B, patch, L)
        count = patches.shape[0] * patches.shape[2]
        # The patches' mean from the batch's sum image (a pass over one image, not over the patches),
        # their covariance from one batched matmul of (patch, L) blocks (an einsum took 10x longer).
        shifted_mean = conv_patches(shifted.sum(0, keepdim=True), conv).sum(dim=(0, 2)) / count
        patch_cov = (patches @ patches.transpose(1, 2)).sum(0) / count - torch.outer(shifted_mean, shifted_mean)
        patch_mean = shifted_mean + channel_mean.flatten().repeat_interleave(math.prod(conv.kernel_size))
        w = conv.weight.flatten(1).to(xf.dtype)  # (out_channels, patch)
        shift = conv.bias.to(xf.dtype) if conv.bias is not None else torch.zeros_like(bn.bias, dtype=xf.dtype)
        mean = w @ patch_mean + shift
        var = ((w @ patch_cov) * w).sum(1).clamp_min(0)  # biased, as BatchNorm normalises with
        scale = bn.weight.to(xf.dtype) * torch.rsqrt(var + bn.eps)
        weight = conv.weight.to(xf.dtype) * scale.view(-1, 1, 1, 1)
        bias = bn.bias.to(xf.dtype) + scale * (shift - mean)  # the conv's bias cancels, as in BatchNorm
    with torch.no_grad():
        bn.num_batches_tracked.add_(1)
        bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), bn.momentum)
        bn.running_var.lerp_((var * count / max(count - 1, 1)).to(bn.running_var.dtype), bn.momentum)
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation)


class ConvNet(nn.Module):
    """Three conv stages (32, 64, 128 channels, each halving the size: 28 -> 14 -> 7 -> 3), flattened,
    then a linear layer to `fc_dim` features (None: no linear layer, 1152 features). `grid` 4 pools the
    last 7x7 map in ceil mode, to 4x4 (its last row and column kept; 2048 features at width 32).

    Each stage is conv, (BatchNorm,) max-pool, ReLU: the function of the usual conv, (BN,) ReLU,
    max-pool, exactly, outputs and gradients alike (ReLU is monotone, so it commutes with a maximum),
    but ReLU's forward and backward then pass over a quarter of the pixels. The first stage's
    convolution and BatchNorm run as one convolution in training (`conv_bn`), and each stage's
    max-pool and ReLU as one C++ kernel on the CPU (`kernels.max_pool_relu`).
    """

    def __init__(self, batch_norm: bool = False, fc_dim: int | None = 256, width: int = 32, in_channels: int = 1,
                 grid: int = 3):
        super().__init__()
        self.batch_norm = batch_norm
        layers: list[nn.Module] = []
        channels = [in_channels, width, 2 * width, 4 * width]
        for stage, (c_in, c_out) in enumerate(zip(channels, channels[1:])):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(c_out))
            layers += [nn.MaxPool2d(2, ceil_mode=stage == 2 and grid == 4), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.grid = grid
        flat_dim = channels[-1] * grid * grid
        self.fc = nn.Linear(flat_dim, fc_dim) if fc_dim else nn.Identity()
        self.feature_dim = fc_dim or flat_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        per_stage = 4 if self.batch_norm else 3  # conv, (BN,) max-pool, ReLU
        for first in range(0, len(self.features), per_stage):
            conv, *norm, pool, _ = self.features[first:first + per_stage]
            x = conv_bn(conv, norm[0], x) if norm else conv(x)
            x = max_pool_relu(pool, x)  # the stage's pool and ReLU in one pass where it can
        if x.shape[-2:] != (self.grid, self.grid):  # another size (16x16 multi-crop views: 2x2; 32x32: 4x4)
            x = F.adaptive_avg_pool2d(x, self.grid)  # (B, C, grid, grid), as 28x28 images give
        return self.fc(x.flatten(1))  # (B, feature_dim)


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for small inputs: 3x3 stem without max-pool, stages at 28, 14, 7 and 4 pixels for
    28x28 images (32, 16, 8, 4 for 32x32), global average pooling."""

    def __init__(self, width: int = 64, in_channels: int = 1):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        blocks, c_in = [], width
        for i, c_out in enumerate([width, 2 * width, 4 * width, 8 * width]):
            stride = 1 if i == 0 else 2
            blocks += [BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.feature_dim = c_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stem = self.stem[2](conv_bn(self.stem[0], self.stem[1], x))  # = self.stem(x), see conv_bn
        return self.blocks(stem).mean(dim=(2, 3))  # global average pool -> (B, 512)


class Attention(nn.Module):
    """Multi-head self-attention. forward uses the fused kernel; weights() computes the softmax
    explicitly, for attention maps."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        return qkv.unbind(0)  # each (B, heads, T, head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.scaled_dot_product_attention(*self._qkv(x))  # (B, heads, T, head_dim)
        return self.proj(out.transpose(1, 2).flatten(2))

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """(B, heads, T, T): row i is token i's attention over all tokens; every row sums to 1."""
        q, k, _ = self._qkv(x)
        return torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), dim=-1)


class Block(nn.Module):
    """Pre-norm transformer layer: x + attention(norm(x)), then x + MLP(norm(x))."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT for small images (here for 28x28): non-overlapping patch_size patches (4: a 7x7 grid of 49 tokens, fine
    enough for attention maps; 7: a 4x4 grid, about 3x cheaper), a CLS token, learned position
    embeddings, `depth` pre-norm layers; the representation is the final-normed CLS token.

    Inputs of another size (multi-crop's local views) get the position embeddings bicubically
    interpolated to their grid, as DINO does.
    """

    def __init__(self, patch_size: int = 4, dim: int = 192, depth: int = 4, heads: int = 3, image_size: int = 28,
                 in_channels: int = 1):
        super().__init__()
        if image_size % patch_size or dim % heads:
            raise ValueError(f"need patch_size ({patch_size}) to divide image_size ({image_size}) and heads ({heads}) to divide dim ({dim})")
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**2, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        self.feature_dim = dim
        for p in (self.cls_token, self.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, 1 + grid*grid, dim): CLS token then patch tokens, row by row, with positions."""
        x = self.patch_embed(images)  # (B, dim, g, g)
        grid = x.shape[-2:]
        pos = self.pos_embed
        if grid != (self.grid, self.grid):
            patches = pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
            patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
            pos = torch.cat([pos[:, :1], patches.flatten(2).transpose(1, 2)], dim=1)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
        return x + pos

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.tokens(images)
        for block in self.blocks:
            x = block(x)
        return self.norm(x[:, 0])  # (B, dim)

    @torch.no_grad()
    def cls_attention(self, images: torch.Tensor) -> torch.Tensor:
        """The last layer's attention of the CLS query over the patch tokens, (B, heads, grid, grid)
        (the rows also give some weight to CLS itself, so a map sums to at most 1)."""
        x = self.tokens(images)
        for block in self.blocks[:-1]:
            x = block(x)
        last = self.blocks[-1]
        cls_row = last.attn.weights(last.norm1(x))[:, :, 0, 1:]  # (B, heads, g*g)
        grid = images.shape[-1] // self.patch_embed.stride[0]
        return cls_row.unflatten(-1, (-1, grid))


VIT_PATCH = 4  # vit-tiny's patch side: a 7x7 grid on 28x28 images, 8x8 on 32x32
# name -> builder(in_channels, image_size)
ENCODERS: dict[str, Callable[[int, int], nn.Module]] = {
    "cnn": lambda channels, size: ConvNet(batch_norm=False, in_channels=channels),
    "cnn-bn": lambda channels, size: ConvNet(batch_norm=True, fc_dim=None, in_channels=channels),
    "cnn-bn-wide": lambda channels, size: ConvNet(batch_norm=True, fc_dim=None, width=64, in_channels=channels),
    "cnn-bn-wide-4x4": lambda channels, size: ConvNet(batch_norm=True, fc_dim=None, width=64, in_channels=channels, grid=4),
    "resnet18": lambda channels, size: ResNet18(in_channels=channels),
    "vit-tiny": lambda channels, size: VisionTransformer(VIT_PATCH, image_size=size, in_channels=channels),
}


def build_encoder(name: str, in_channels: int = 1, image_size: int = 28) -> nn.Module:
    """A fresh encoder for (B, in_channels, image_size, image_size) images; it has a `feature_dim` attribute."""
    if name not in ENCODERS:
        raise UserError(f"unknown encoder {name!r}; choose one of: {', '.join(ENCODERS)}")
    if name == "vit-tiny" and image_size % VIT_PATCH:
        raise UserError(f"encoder vit-tiny cuts images into {VIT_PATCH}x{VIT_PATCH} patches, which do not tile "
                        f"{image_size}x{image_size} images; use another encoder or resize them to a multiple of {VIT_PATCH}")
    return ENCODERS[name](in_channels, image_size)
