"""The shared part of every image datamodule: seeded splits, in-memory datasets, dataloaders, the DataSpec."""

from __future__ import annotations

from abc import ABC, abstractmethod

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from genlab.data.blocks import TrainsInBlocks
from genlab.data.spec import DataSpec
from genlab.data.tensor_dataset import InMemoryImages, already_batched
from genlab.errors import check
from genlab.settings import CountOrFraction, NonNegativeInt, PositiveInt

Split = tuple[torch.Tensor, torch.Tensor]


def split_off(split: Split, size: int | float, seed: int) -> tuple[Split, Split]:
    """Split off `size` examples (a count, or a fraction if < 1) with a fixed seed: (rest, taken).

    The seed is the data's own, not the training seed, so every run of a sweep sees the same validation set.
    """
    images, labels = split
    count = round(size * len(images)) if isinstance(size, float) and size < 1 else int(size)
    check(0 < count < len(images), f"cannot split {count} examples off a split of {len(images)}")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    taken, rest = order[:count], order[count:]
    return (images[rest], labels[rest]), (images[taken], labels[taken])


class ImageDataModule(TrainsInBlocks, pl.LightningDataModule, ABC):
    """Holds train/val/test as uint8 tensors in memory and batches them by index.

    `batch_size` is per device: under DDP each process draws its own batches of this size.
    """

    name: str = "images"

    def __init__(
        self,
        batch_size: PositiveInt = 128,
        eval_batch_size: PositiveInt | None = None,
        val_size: CountOrFraction = 5000,
        split_seed: int = 0,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size = val_size
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.splits: dict[str, InMemoryImages] = {}

    @property
    @abstractmethod
    def shape(self) -> tuple[int, int, int]:
        """(channels, height, width), known without loading any data."""

    @property
    def num_classes(self) -> int | None:
        return None

    @property
    def spec(self) -> DataSpec:
        return DataSpec(kind="image", shape=self.shape, num_classes=self.num_classes, name=self.name)

    @abstractmethod
    def load(self) -> tuple[Split, Split]:
        """The (train, test) splits as uint8 (N, C, H, W) images and int64 labels."""

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        train, test = self.load()
        train, val = split_off(train, self.val_size, self.split_seed)
        self.splits = {name: InMemoryImages(*split) for name, split in (("train", train), ("val", val), ("test", test))}

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.splits[split],
            batch_size=self.training_block_size(self.batch_size) if split == "train" else self.eval_batch_size,
            shuffle=shuffle,
            collate_fn=already_batched,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
