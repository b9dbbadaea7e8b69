"""How well a completion repairs an image: the error on the pixels it had to fill (the known ones are kept)."""

from __future__ import annotations

import torch


def masked_mse(completion: torch.Tensor, original: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error (pixel values in [0, 1]) over the pixels to fill (mask 0), per image (N,)."""
    unknown = (1 - mask).expand_as(original)
    return ((completion - original).square() * unknown).flatten(1).sum(1) / unknown.flatten(1).sum(1)
