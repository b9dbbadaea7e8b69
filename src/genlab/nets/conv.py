"""Convolutional encoder/decoder pairs: stride-2 4x4 convolutions, DCGAN-style, for images of 8 px and up."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from genlab.errors import ConfigError
from genlab.nets.labels import LabelledSequential, label_inputs, label_width
from genlab.settings import PositiveInt, Sizes


class ConvEncoderDecoder(nn.Module):
    """Each entry of `channels` halves the image (encoder) or doubles it back (decoder).

    28x28 with channels [32, 64] goes 28 -> 14 -> 7; the image side must divide by 2 ** len(channels). With
    `num_classes`, an embedding of the class label joins the encoder's flattened features and the decoder's latent.
    """

    data_kind = "image"

    def __init__(
        self,
        shape: Sequence[int],
        latent_dim: int,
        channels: Sizes = (32, 64),
        out_per_latent: PositiveInt = 2,
        num_classes: PositiveInt | None = None,
    ) -> None:
        super().__init__()
        in_channels, height, width = shape
        factor = 2 ** len(channels)
        if height % factor or width % factor:
            raise ConfigError(
                f"model/net=conv halves the image {len(channels)} times (model.net.channels={list(channels)}), "
                f"but {height}x{width} images do not divide by {factor}; use fewer channels entries, "
                f"model/net=mlp, or resize the data"
            )
        inner = (channels[-1], height // factor, width // factor)
        inner_size = inner[0] * inner[1] * inner[2]
        labels = label_width(num_classes, latent_dim)

        down: list[nn.Module] = []
        for c_in, c_out in zip([in_channels, *channels[:-1]], channels, strict=True):
            down += [nn.Conv2d(c_in, c_out, 4, stride=2, padding=1), nn.SiLU()]
        self.encoder = LabelledSequential(
            *down,
            nn.Flatten(),
            *label_inputs(num_classes, latent_dim),
            nn.Linear(inner_size + labels, out_per_latent * latent_dim),
        )

        up: list[nn.Module] = [
            *label_inputs(num_classes, latent_dim),
            nn.Linear(latent_dim + labels, inner_size),
            nn.SiLU(),
            nn.Unflatten(1, inner),
        ]
        widths = [*reversed(channels), in_channels]
        for i, (c_in, c_out) in enumerate(pairwise(widths)):
            up.append(nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1))
            if i < len(widths) - 2:
                up.append(nn.SiLU())
        self.decoder = LabelledSequential(*up)
