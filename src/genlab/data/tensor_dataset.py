"""A dataset over in-memory tensors that the DataLoader batches by index, one tensor gather per batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class InMemoryImages(Dataset):
    """uint8 images (N, C, H, W) and integer labels, served as float images in [0, 1].

    Kept as uint8 (4x smaller than float32) and converted per batch. `__getitems__` lets the DataLoader fetch a
    whole batch with one indexing op instead of collating N single examples.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images of shape (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index].float().div_(255), self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)  # long even when empty (a Poisson-sampled batch can be)
        return self.images[index].float().div_(255), self.labels[index]


def already_batched(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn for datasets whose `__getitems__` returns a finished batch."""
    return batch
