"""The denoising UNet of DDPM (Ho et al., 2020), sized from the image: (x_t, t) -> a tensor shaped like x_t, or
(x_t, t, labels) when class-conditional.

Levels of residual blocks at halving resolutions, each block told the time through a learned embedding of it (plus a
learned embedding of the class label, when conditional); self-attention in the levels whose maps are at most
`attention_resolution` pixels on a side and in the middle; skip connections from each block on the way down to one on
the way up.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.nets.labels import required_labels
from genlab.settings import NonNegativeInt, PositiveInt, UnitFraction

#: Channel multipliers per level by default: (1, 2, 2, 2) cut to the levels the image allows (see default_mults).
DEFAULT_MULTS = (1, 2, 2, 2)
#: The time (in [0, 1]) is scaled to this range before its sinusoidal embedding, as for DDPM's integer timesteps.
TIME_SCALE = 1000.0


def default_mults(height: int, width: int) -> tuple[int, ...]:
    """One level per halving that keeps the map at least 4 px and even-sided, up to 3: 8 px -> (1, 2) (8, 4),
    28 -> (1, 2, 2) (28, 14, 7), 32 and 64 -> (1, 2, 2, 2) (down to 4 and 8 px)."""
    halvings = 0
    while halvings < len(DEFAULT_MULTS) - 1:
        factor = 2 ** (halvings + 1)
        if height % factor or width % factor or min(height, width) // factor < 4:
            break
        halvings += 1
    return DEFAULT_MULTS[: halvings + 1]


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (DDPM's, from 128 channels up) and at least 4 channels per group below that.

    A group of one channel would subtract each map's own mean: a narrow UNet then cannot tell an image's overall
    brightness at high noise, and its MNIST samples come out on grey or white backgrounds.
    """
    return nn.GroupNorm(math.gcd(32, max(1, channels // 4)), channels)


def zero(module: nn.Module) -> nn.Module:
    """A layer that starts at zero, so each residual branch (and the output) starts as a no-op."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def sinusoidal_embedding(time: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) times -> (N, dim) sines and cosines of geometrically spaced frequencies (Vaswani et al., 2017)."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=time.device, dtype=torch.float32) / half)
    angles = time.float()[:, None] * TIME_SCALE * frequencies[None]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class ResidualBlock(nn.Module):
    """norm-SiLU-conv, plus the projected time embedding, norm-SiLU-dropout-conv; added to a (projected) skip."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, dropout: float) -> None:
        super().__init__()
        self.first = nn.Sequential(group_norm(c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, c_out))
        self.second = nn.Sequential(
            group_norm(c_out), nn.SiLU(), nn.Dropout(dropout), zero(nn.Conv2d(c_out, c_out, 3, padding=1))
        )
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        h = self.first(x) + self.time(time)[:, :, None, None]
        return self.skip(x) + self.second(h)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the pixels of a map (scaled_dot_product_attention), as a residual branch."""

    def __init__(self, channels: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(n, 3, self.heads, c // self.heads, h * w).transpose(-1, -2).unbind(1)
        attended = F.scaled_dot_product_attention(q, k, v)  # (n, heads, h * w, c / heads)
        return x + self.out(attended.transpose(-1, -2).reshape(n, c, h, w))


class Block(nn.Module):
    """One residual block, followed by self-attention when asked."""

    def __init__(self, c_in: int, c_out: int, time_dim: int, dropout: float, heads: int | None) -> None:
        super().__init__()
        self.residual = ResidualBlock(c_in, c_out, time_dim, dropout)
        self.attention = SelfAttention(c_out, heads) if heads else nn.Identity()

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.attention(self.residual(x, time))


class Downsample(nn.Module):
    """A stride-2 3x3 convolution: half the side."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour doubling, then a 3x3 convolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """DDPM's UNet: `forward(x, time)` with images x (N, C, H, W) and times in [0, 1] (N,).

    Level i has `num_res_blocks` blocks of `channels * channel_mults[i]` channels, and every level but the last
    halves the map, so the image side must divide by 2 ** (levels - 1); `channel_mults=None` picks the levels from
    the image (see `default_mults`). DDPM's CIFAR-10 net: channels 128, channel_mults [1, 2, 2, 2], 2 blocks,
    dropout 0.1, attention at 16 px.

    With `num_classes`, `forward(x, time, labels)` takes class labels 0..num_classes-1 (N,): a learned embedding of
    the label is added to the time embedding, so every residual block is told the class (the design of Dhariwal &
    Nichol's and Ho & Salimans's class-conditional models). Unconditional, it has no such parameters.
    """

    data_kind = "image"

    def __init__(
        self,
        shape: Sequence[int],
        channels: PositiveInt = 64,
        channel_mults: Sequence[PositiveInt] | None = None,
        num_res_blocks: PositiveInt = 2,
        attention_resolution: NonNegativeInt = 16,
        attention_heads: PositiveInt = 1,
        dropout: UnitFraction = 0.1,
        num_classes: PositiveInt | None = None,
    ) -> None:
        super().__init__()
        in_channels, height, width = shape
        mults = tuple(channel_mults) if channel_mults is not None else default_mults(height, width)
        factor = 2 ** (len(mults) - 1)
        if height % factor or width % factor:
            raise ConfigError(
                f"model/net=unet halves the image {len(mults) - 1} times (model.net.channel_mults={list(mults)}), "
                f"but {height}x{width} images do not divide by {factor}; use fewer channel_mults entries "
                f"(model.net.channel_mults=null fits them to the image) or resize the data"
            )
        level_channels = [channels * mult for mult in mults]
        if any(c % attention_heads for c in level_channels):
            raise ConfigError(
                f"model.net.attention_heads={attention_heads} does not divide the channel counts {level_channels}; "
                f"pick a number of heads that divides them all"
            )
        time_dim = 4 * channels
        self.time_features = 2 * math.ceil(channels / 2)
        self.time_embedding = nn.Sequential(
            nn.Linear(self.time_features, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim)
        )
        self.class_embedding = nn.Embedding(num_classes, time_dim) if num_classes else None
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)

        def heads_at(side: int) -> int | None:
            return attention_heads if side <= attention_resolution else None

        self.down = nn.ModuleList()
        skips, c, side = [channels], channels, min(height, width)
        for level, c_level in enumerate(level_channels):
            for _ in range(num_res_blocks):
                self.down.append(Block(c, c_level, time_dim, dropout, heads_at(side)))
                c = c_level
                skips.append(c)
            if level < len(level_channels) - 1:
                self.down.append(Downsample(c))
                skips.append(c)
                side //= 2
        self.middle = nn.ModuleList(
            [Block(c, c, time_dim, dropout, attention_heads), Block(c, c, time_dim, dropout, None)]
        )
        self.up = nn.ModuleList()
        for level, c_level in reversed(list(enumerate(level_channels))):
            for _ in range(num_res_blocks + 1):
                self.up.append(Block(c + skips.pop(), c_level, time_dim, dropout, heads_at(side)))
                c = c_level
            if level > 0:
                self.up.append(Upsample(c))
                side *= 2
        self.head = nn.Sequential(group_norm(c), nn.SiLU(), zero(nn.Conv2d(c, in_channels, 3, padding=1)))

    def forward(self, x: torch.Tensor, time: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        embedding = self.time_embedding(sinusoidal_embedding(time, self.time_features))
        if self.class_embedding is not None:
            embedding = embedding + self.class_embedding(required_labels(labels))
        h = self.stem(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, embedding)
            skips.append(h)
        for block in self.middle:
            h = block(h, embedding)
        for layer in self.up:
            h = layer(h, embedding) if isinstance(layer, Upsample) else layer(torch.cat([h, skips.pop()], 1), embedding)
        return self.head(h)
