"""Any folder of images (CelebA, your own): decoded once, resized and cropped, cached as one uint8 tensor."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Literal

import torch
from annotated_types import Ge
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as F

from genlab.cache import cached
from genlab.data.image_datamodule import ImageDataModule, Split, split_off
from genlab.errors import DataError
from genlab.settings import CountOrFraction


class ImageFolderDataModule(ImageDataModule):
    """Images found recursively under `path`; a class label per immediate subfolder (0 when flat).

    Each image is resized on its short side to `image_size` and centre-cropped to a square. The decoded tensor is
    cached in `cache_dir`, keyed by the files' names, sizes and times and the target size, never beside the data.
    """

    name = "image_folder"

    def __init__(
        self,
        path: str,
        cache_dir: str,
        image_size: Annotated[int, Ge(4)] = 64,
        channels: Literal[1, 3] = 3,
        test_size: CountOrFraction = 0.05,
        val_size: CountOrFraction = 0.05,
        **kwargs,
    ) -> None:
        super().__init__(val_size=val_size, **kwargs)
        self.path = Path(path).expanduser()
        self.cache_dir = Path(cache_dir).expanduser()
        self.image_size = image_size
        self.channels = channels
        self.test_size = test_size

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.image_size, self.image_size)

    def _files(self) -> list[Path]:
        if not self.path.is_dir():
            raise DataError(f"data.path={self.path} is not a folder; set data.path to a folder of images")
        files = sorted(p for p in self.path.rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file())
        if len(files) < 3:
            raise DataError(f"data.path={self.path} holds {len(files)} images ({', '.join(IMG_EXTENSIONS)}); need 3+")
        return files

    def _cache_file(self, files: list[Path]) -> Path:
        key = hashlib.sha256(f"{self.image_size}:{self.channels}".encode())
        for file in files:
            stat = file.stat()
            key.update(f"{file.relative_to(self.path)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return self.cache_dir / "image_folder" / f"{key.hexdigest()[:20]}.pt"

    def _decode(self, files: list[Path]) -> Split:
        mode = ImageReadMode.GRAY if self.channels == 1 else ImageReadMode.RGB
        classes = sorted({file.parent for file in files})
        images = torch.empty((len(files), *self.shape), dtype=torch.uint8)
        for i, file in enumerate(files):
            try:
                image = decode_image(str(file), mode=mode)
            except RuntimeError as exc:
                raise DataError(f"cannot decode image {file}: {exc}; remove or replace it") from None
            image = F.resize(image, self.image_size, antialias=True)
            images[i] = F.center_crop(image, [self.image_size, self.image_size])
        labels = torch.tensor([classes.index(file.parent) for file in files], dtype=torch.long)
        return images, labels

    def load(self) -> tuple[Split, Split]:
        files = self._files()
        images, labels = cached(
            self._cache_file(files),
            build=lambda: self._decode(files),
            load=lambda path: torch.load(path, weights_only=True),
            save=lambda split, path: torch.save(split, path),
            what="decoded image folder",
        ).value
        return split_off((images, labels), self.test_size, self.split_seed + 1)
