"""Class-conditional generation, the part every model shares: whether a model takes class labels, the labels it
trains and samples with, and the checks on labels a user asks for.

A model adopts it in a few lines: `self.conditioning = ClassConditioning.of(spec, conditional, "VAE")`, its net built
with `**self.conditioning.net_sizes()` (nets take `num_classes` and an optional `labels` tensor, see
`genlab.nets.labels`), `self.conditioning.of_batch(labels)` for its data batches and
`self.conditioning.for_sampling(n, labels, device)` in `sample(n, generator=None, labels=None)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError, InputError

#: What `sample(n, labels=...)` accepts: one class for all n, or one class per sample.
Labels = int | Sequence[int] | torch.Tensor


def balanced_labels(n: int, num_classes: int, start: int = 0) -> torch.Tensor:
    """Labels 0, 1, ..., K-1, 0, 1, ... (from position `start`): n samples spread as evenly as n allows over the
    classes, with no random draw, so sample-quality numbers depend on the weights only. Under DDP each process
    passes the position its share starts at, and together they are as even as one process would be."""
    return (torch.arange(n) + start) % num_classes


@dataclass(frozen=True)
class ClassConditioning:
    """The class labels a model generates from: `num_classes` of them, or None when the model is unconditional."""

    num_classes: int | None = None
    data: str = "?"

    @classmethod
    def of(cls, spec: DataSpec, conditional: bool, model: str) -> ClassConditioning:
        """`model.conditional` checked against the data: a conditional model needs labelled data."""
        if conditional and spec.num_classes is None:
            raise ConfigError(
                f"model.conditional=true: the {model} learns to generate a requested class, but "
                f"data={spec.name or '?'} has no class labels; use labelled data (digits, mnist, fashion_mnist, "
                f"cifar10) or model.conditional=false"
            )
        return cls(spec.num_classes if conditional else None, spec.name or "?")

    @property
    def enabled(self) -> bool:
        return self.num_classes is not None

    def net_sizes(self) -> dict[str, Any]:
        """What the net factory gets besides the data's shape: the number of classes, when conditional."""
        return {"num_classes": self.num_classes} if self.enabled else {}

    def of_batch(self, labels: torch.Tensor) -> torch.Tensor | None:
        """A data batch's labels as the net takes them: None when the model ignores them."""
        return labels if self.enabled else None

    def all_classes(self) -> list[int]:
        """Every class, in order (for a grid with one row per class)."""
        return list(range(self._require("labels=all asks for every class")))

    def row_labels(self) -> list[str]:
        """The labels of a class grid's rows (`class_grid`): the class numbers."""
        return [str(k) for k in self.all_classes()]

    def class_grid(self, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Noise and labels for a grid with one row per class and one column per row of `noise`: down a column
        only the label changes, which shows what the label does."""
        num_classes = self._require("a grid of the classes was asked for")
        labels = torch.arange(num_classes, device=noise.device).repeat_interleave(len(noise))
        return noise.repeat(num_classes, *([1] * (noise.dim() - 1))), labels

    def for_sampling(self, n: int, labels: Labels | None, device: torch.device | str) -> torch.Tensor | None:
        """The labels of n samples: class-balanced when none are given (None for an unconditional model); a given
        label (one for all n, or one per sample) is checked against the classes."""
        if labels is None:
            return balanced_labels(n, self.num_classes).to(device) if self.enabled else None
        num_classes = self._require("class labels were given")
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.ndim == 0:
            labels = labels.expand(n)
        if labels.shape != (n,):
            raise InputError(f"give one label for all {n} samples or one per sample, not {tuple(labels.shape)}")
        outside = labels[(labels < 0) | (labels >= num_classes)]
        if len(outside):
            raise InputError(
                f"label {int(outside[0])} is not a class of data={self.data}, whose classes are 0..{num_classes - 1}"
            )
        return labels.to(device)

    def for_editing(self, n: int, labels: Labels | None, device: torch.device | str) -> torch.Tensor | None:
        """The labels of n images to complete: a conditional model without an unconditional half (VAE, GAN) needs
        the images' classes, given; an unconditional one takes none."""
        if labels is None and self.enabled:
            raise InputError(
                "this model is class-conditional and completes an image of a given class: give the images' labels "
                "(genlab-sample label=K)"
            )
        return None if labels is None else self.for_sampling(n, labels, device)

    def _require(self, what: str) -> int:
        if self.num_classes is None:
            raise ConfigError(
                f"{what}, but this model is unconditional (trained with model.conditional=false) and takes no class "
                f"labels; train with model.conditional=true to choose the class"
            )
        return self.num_classes


UNCONDITIONAL = ClassConditioning()
