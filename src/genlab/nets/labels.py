"""How a class label enters a net: as a learned embedding beside a flat input (decoders, encoders, MLP generators), as
a class map added after a batch norm (convolutional generators), or through a projection on a discriminator's
features (Miyato & Koyama, 2018). Plain torch.nn, shared by every net.

Nets are `LabelledSequential`s: their layers run in order, and the layers that take a label (`LabelLayer`) get it.
An unconditional net has no such layer, takes `labels=None` and has the same parameters as a plain `nn.Sequential`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as with_spectral_norm


class LabelLayer(nn.Module):
    """A layer whose output depends on the class label as well as on its input: `forward(x, labels)`."""


def required_labels(labels: torch.Tensor | None) -> torch.Tensor:
    """The labels a class-conditional net was given; a call without them is a bug in the caller."""
    if labels is None:
        raise ValueError("this net is class-conditional: pass the class labels (a LongTensor of shape (N,))")
    return labels


class ConcatLabel(LabelLayer):
    """(N, F) -> (N, F + dim): a learned embedding of the label appended to a flat input.

    The cGAN of Mirza & Osindero (2014) and the conditional VAE of Sohn et al. (2015). The embedding starts as
    N(0, 1) vectors, like the noise: nets give it as many dimensions as their latent, so that from the start the
    label weighs as much as the noise in the first layer. Not before a batch norm: see `LabelShift`.
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(num_classes, dim)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return torch.cat([x, self.embedding(required_labels(labels)).to(x.dtype)], dim=1)


class LabelShift(LabelLayer):
    """Adds a class-dependent map to a normalised feature map of `shape`: a linear function of a learned class
    embedding (the shift of a conditional batch norm, de Vries et al. 2017, computed from a class embedding as in
    BigGAN, here one value per position of the map).

    It comes after the batch norm. A label joined to the noise before the norm adds the spread between classes to the
    variance the norm divides by, which shrinks what the noise changes within a class: on the digits, a DCGAN built
    that way drew about a third of the within-class variety (pixel std) of one built with this layer.
    """

    def __init__(self, num_classes: int, shape: Sequence[int], dim: int) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.embedding = nn.Embedding(num_classes, dim)
        self.linear = nn.Linear(dim, math.prod(shape), bias=False)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        shift = self.linear(self.embedding(required_labels(labels))).view(-1, *self.shape)
        return x + shift.to(x.dtype)


class ProjectionHead(LabelLayer):
    """A discriminator's last layer with the projection of Miyato & Koyama (2018): linear(h) + <embed(y), h>.

    The inner product scores how well the features h fit the requested class. The embedding is initialised on the
    scale of a linear layer's default weights, and spectrally normalised when the discriminator is (`linear` comes
    already normalised then).
    """

    def __init__(self, linear: nn.Linear, num_classes: int, spectral_norm: bool = False) -> None:
        super().__init__()
        self.linear = linear
        embedding = nn.Embedding(num_classes, linear.in_features)
        bound = linear.in_features**-0.5
        nn.init.uniform_(embedding.weight, -bound, bound)
        self.embedding = with_spectral_norm(embedding) if spectral_norm else embedding

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        projection = (self.embedding(required_labels(labels)) * x).sum(dim=1, keepdim=True)
        return self.linear(x) + projection


class LabelledSequential(nn.Sequential):
    """`nn.Sequential` whose `LabelLayer`s also get the class labels: `net(x, labels)`, `labels` None when
    unconditional. Its parameters are named as in `nn.Sequential`, so unconditional checkpoints keep their keys."""

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self:
            x = layer(x, labels) if isinstance(layer, LabelLayer) else layer(x)
        return x


def label_shift(num_classes: int | None, shape: Sequence[int], dim: int) -> list[nn.Module]:
    """The layer that adds a class map to a normalised feature map of `shape`: none for an unconditional net."""
    return [LabelShift(num_classes, shape, dim)] if num_classes else []


def label_inputs(num_classes: int | None, dim: int) -> list[nn.Module]:
    """The layers that append a `dim`-dimensional label embedding to a flat input: none for an unconditional net."""
    return [ConcatLabel(num_classes, dim)] if num_classes else []


def label_width(num_classes: int | None, dim: int) -> int:
    """How many values `label_inputs` appends."""
    return dim if num_classes else 0
