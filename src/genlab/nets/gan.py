"""Generator / discriminator pairs for GANs: DCGAN-style convolutions sized from the image shape, and MLPs for tiny
images. Generators end in tanh (images in [-1, 1]); discriminators return one unnormalised score per image.

With `num_classes`, both are class-conditional (`generator(z, labels)`, `discriminator(x, labels)`): the DCGAN
generator adds a class map after its first batch norm (the MLP generator, which has none, takes an embedding of the
label beside the noise), and the discriminator scores with a class projection (Miyato & Koyama, 2018), the design
BigGAN and StudioGAN use."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise
from typing import Literal

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm

from genlab.errors import ConfigError
from genlab.nets.labels import LabelledSequential, ProjectionHead, label_inputs, label_shift, label_width
from genlab.settings import PositiveInt, Sizes

Norm = Literal["batch", "layer", "none"]


def upsamplings_for(side: int) -> int:
    """How many times a DCGAN doubles its starting map to reach `side`: the most that keep the start >= 4 px.

    28 -> 7x7 doubled twice; 32 -> 4x4 three times; 64 -> 4x4 four times; 8 -> 4x4 once.
    """
    count = 0
    while side % 2 ** (count + 1) == 0 and side // 2 ** (count + 1) >= 4:
        count += 1
    return count


def _norm_2d(kind: Norm, channels: int) -> nn.Module:
    """Batch norm (DCGAN), layer norm over a whole map (GroupNorm with one group; the WGAN-GP choice, since a
    per-sample gradient penalty is meaningless across a batch-normalised batch) or nothing."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    return nn.Identity()


def _maybe_spectral(layer: nn.Module, enabled: bool) -> nn.Module:
    return with_spectral_norm(layer) if enabled else layer


def _score_layer(features: int, num_classes: int | None, spectral_norm: bool) -> nn.Module:
    """A discriminator's last layer: one score from `features` values, with the class projection when conditional."""
    linear = _maybe_spectral(nn.Linear(features, 1), spectral_norm)
    return ProjectionHead(linear, num_classes, spectral_norm) if num_classes else linear


class DCGAN(nn.Module):
    """DCGAN (Radford et al., 2016): stride-2 4x4 transposed convolutions up, stride-2 4x4 convolutions down.

    The generator starts from a `side / 2**k` map and doubles it k times (see `upsamplings_for`); `width` is the
    channel count next to the image, doubled at each coarser level, as in pytorch/examples' dcgan.
    """

    data_kind = "image"

    def __init__(
        self,
        shape: Sequence[int],
        latent_dim: int,
        width: PositiveInt = 64,
        d_norm: Norm = "batch",
        spectral_norm: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        channels, height, side = shape
        levels = upsamplings_for(side)
        if height != side or levels == 0:
            raise ConfigError(
                f"model/net=dcgan needs square images whose side halves at least once to 4 px or more "
                f"(e.g. 8, 28, 32, 64), but the data gives {height}x{side}; use model/net=mlp_gan or resize the data"
            )
        start = side // 2**levels
        widths = [width * 2**level for level in reversed(range(levels))]  # coarse to fine

        up: list[nn.Module] = [
            nn.Linear(latent_dim, widths[0] * start * start, bias=False),
            nn.Unflatten(1, (widths[0], start, start)),
            nn.BatchNorm2d(widths[0]),
            *label_shift(num_classes, (widths[0], start, start), latent_dim),
            nn.ReLU(inplace=True),
        ]
        for c_in, c_out in pairwise(widths):
            up += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        up += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]
        self.generator = LabelledSequential(*up)

        down: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([channels, *reversed(widths[1:])], reversed(widths), strict=True)):
            down.append(_maybe_spectral(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=d_norm == "none"), spectral_norm))
            if i > 0:  # DCGAN: no normalisation on the layer that sees the image
                down.append(_norm_2d(d_norm, c_out))
            down.append(nn.LeakyReLU(0.2, inplace=True))
        down += [nn.Flatten(), _score_layer(widths[0] * start * start, num_classes, spectral_norm)]
        self.discriminator = LabelledSequential(*down)
        self.apply(_dcgan_init)


def _dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: N(0, 0.02) weights, N(1, 0.02) norm scales."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


class MLPGAN(nn.Module):
    """Fully connected generator and discriminator, for tiny images (e.g. the 8x8 digits) and quick tests."""

    data_kind = "image"

    def __init__(
        self,
        shape: Sequence[int],
        latent_dim: int,
        hidden_dims: Sizes = (256, 256),
        spectral_norm: bool = False,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        image_size = shape[0] * shape[1] * shape[2]

        up: list[nn.Module] = label_inputs(num_classes, latent_dim)
        for d_in, d_out in zip(
            [latent_dim + label_width(num_classes, latent_dim), *hidden_dims[:-1]], hidden_dims, strict=True
        ):
            up += [nn.Linear(d_in, d_out), nn.ReLU(inplace=True)]
        up += [nn.Linear(hidden_dims[-1], image_size), nn.Tanh(), nn.Unflatten(1, tuple(shape))]
        self.generator = LabelledSequential(*up)

        down: list[nn.Module] = [nn.Flatten()]
        reversed_dims = list(reversed(hidden_dims))
        for d_in, d_out in zip([image_size, *reversed_dims[:-1]], reversed_dims, strict=True):
            down += [_maybe_spectral(nn.Linear(d_in, d_out), spectral_norm), nn.LeakyReLU(0.2, inplace=True)]
        down.append(_score_layer(reversed_dims[-1], num_classes, spectral_norm))
        self.discriminator = LabelledSequential(*down)
