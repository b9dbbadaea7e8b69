"""Fully connected encoder/decoder pairs: any image shape, flattened."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from torch import nn

from genlab.nets.labels import LabelledSequential, label_inputs, label_width
from genlab.settings import PositiveInt, Sizes


def mlp(sizes: Sequence[int], activation: type[nn.Module] = nn.ReLU) -> nn.Sequential:
    """Linear layers between consecutive `sizes`, with `activation` between them but not after the last."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(pairwise(sizes)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class MLPEncoderDecoder(nn.Module):
    """encoder: image -> `out_per_latent` * latent_dim values; decoder: latent -> one value per image dimension.

    With hidden_dims=[400] and latent_dim=20 on MNIST this is the pytorch/examples VAE (784-400-20). With
    `num_classes`, both take the class label as well (`encoder(x, labels)`, `decoder(z, labels)`), an embedding of
    it beside their input: a conditional VAE (Sohn et al., 2015).
    """

    data_kind = "image"

    def __init__(
        self,
        shape: Sequence[int],
        latent_dim: int,
        hidden_dims: Sizes = (512, 256),
        out_per_latent: PositiveInt = 2,
        num_classes: PositiveInt | None = None,
    ) -> None:
        super().__init__()
        data_dim = math.prod(shape)
        hidden = list(hidden_dims)
        labels = label_width(num_classes, latent_dim)
        self.encoder = LabelledSequential(
            nn.Flatten(),
            *label_inputs(num_classes, latent_dim),
            mlp([data_dim + labels, *hidden, out_per_latent * latent_dim]),
        )
        self.decoder = LabelledSequential(
            *label_inputs(num_classes, latent_dim),
            mlp([latent_dim + labels, *reversed(hidden), data_dim]),
            nn.Unflatten(1, tuple(shape)),
        )
