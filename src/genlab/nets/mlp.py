"""Fully connected encoder/decoder pairs: any image shape, flattened."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

from torch import nn

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

    With hidden_dims=[400] and latent_dim=20 on MNIST this is the pytorch/examples VAE (784-400-20).
    """

    data_kind = "image"

    def __init__(
        self,
        shape: Sequence[int],
        latent_dim: int,
        hidden_dims: Sizes = (512, 256),
        out_per_latent: PositiveInt = 2,
    ) -> None:
        super().__init__()
        data_dim = math.prod(shape)
        hidden = list(hidden_dims)
        self.encoder = nn.Sequential(nn.Flatten(), mlp([data_dim, *hidden, out_per_latent * latent_dim]))
        self.decoder = nn.Sequential(mlp([latent_dim, *reversed(hidden), data_dim]), nn.Unflatten(1, tuple(shape)))
