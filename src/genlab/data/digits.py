"""scikit-learn's bundled 8x8 handwritten digits: real images that need no download, for demos and tests."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits

from genlab.data.image_datamodule import ImageDataModule, Split, split_off
from genlab.settings import CountOrFraction


class DigitsDataModule(ImageDataModule):
    """1797 grey 8x8 digits (values 0..16, scaled to 0..255); the test split is carved with the split seed."""

    name = "digits"

    def __init__(self, test_size: CountOrFraction = 0.15, val_size: CountOrFraction = 0.1, **kwargs) -> None:
        super().__init__(val_size=val_size, **kwargs)
        self.test_size = test_size

    @property
    def shape(self) -> tuple[int, int, int]:
        return (1, 8, 8)

    @property
    def num_classes(self) -> int:
        return 10

    def load(self) -> tuple[Split, Split]:
        digits = load_digits()
        images = torch.from_numpy(digits.images * (255 / 16)).round().to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(digits.target).long()
        return split_off((images, labels), self.test_size, self.split_seed + 1)
