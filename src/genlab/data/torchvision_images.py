"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision: downloaded once into `paths.data_dir`, then held in memory."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchvision import datasets

from genlab.data.image_datamodule import ImageDataModule, Split
from genlab.errors import DataError

# name -> (torchvision class, shape, folder under data_dir that holds the files)
DATASETS: dict[str, tuple[type, tuple[int, int, int], str]] = {
    "mnist": (datasets.MNIST, (1, 28, 28), "MNIST/raw"),
    "fashion_mnist": (datasets.FashionMNIST, (1, 28, 28), "FashionMNIST/raw"),
    "cifar10": (datasets.CIFAR10, (3, 32, 32), "cifar-10-batches-py"),
}


def _as_uint8_nchw(data: torch.Tensor | np.ndarray) -> torch.Tensor:
    """torchvision keeps MNIST as (N, H, W) tensors and CIFAR as (N, H, W, C) arrays; make both (N, C, H, W)."""
    images = torch.as_tensor(data)
    return images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2).contiguous()


class TorchvisionDataModule(ImageDataModule):
    """One of torchvision's classic image datasets; its official test split, a seeded validation split."""

    def __init__(
        self, dataset: Literal["mnist", "fashion_mnist", "cifar10"], data_dir: str, download: bool = True, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.name = dataset
        self.dataset_class, self._shape, subfolder = DATASETS[dataset]
        self.data_dir = Path(data_dir).expanduser()
        self.download = download
        self.folder = (self.data_dir / subfolder).resolve()

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    @property
    def num_classes(self) -> int:
        return 10

    def _open_splits(self, download: bool = False) -> tuple[datasets.VisionDataset, datasets.VisionDataset]:
        root = str(self.data_dir)
        return (
            self.dataset_class(root, train=True, download=download),
            self.dataset_class(root, train=False, download=download),
        )

    def prepare_data(self) -> None:
        """Download the files if they are missing (torchvision skips files it has); offline, stop at once."""
        if not self.download:
            return
        new_folders = [folder for folder in (self.folder, *self.folder.parents) if not folder.exists()]
        try:
            self._open_splits(download=True)
        except (RuntimeError, OSError) as exc:
            for folder in new_folders:  # the folders torchvision made for the download, deepest first
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[-1][:160] if lines else type(exc).__name__  # torchvision's last line names the cause
            raise DataError(
                f"{self.name} is not in {self.folder} and could not be downloaded ({reason}); run once with "
                f"network access, copy its files there, or point GENLAB_DATA_DIR (paths.data_dir) at a folder "
                f"that holds them"
            ) from None

    def load(self) -> tuple[Split, Split]:
        try:
            splits = self._open_splits()
        except RuntimeError:
            raise DataError(
                f"{self.name} is not in {self.folder}; copy its files there, point GENLAB_DATA_DIR "
                f"(paths.data_dir) at a folder that holds them, or allow data.download=true"
            ) from None
        return tuple((_as_uint8_nchw(split.data), torch.as_tensor(split.targets, dtype=torch.long)) for split in splits)
