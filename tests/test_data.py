"""Datamodules: in-memory batches, fixed seeded splits, specs known before loading, image folders cached."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from requires import data_dir, requires_data
from torchvision.utils import save_image

from genlab.data.digits import DigitsDataModule
from genlab.data.image_folder import ImageFolderDataModule
from genlab.data.tensor_dataset import InMemoryImages
from genlab.data.torchvision_images import TorchvisionDataModule
from genlab.errors import DataError


def test_batches_by_index_equal_single_examples() -> None:
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    dataset = InMemoryImages(images, torch.arange(10))
    batch, labels = dataset.__getitems__([3, 7, 1])
    assert torch.equal(batch, torch.stack([dataset[i][0] for i in (3, 7, 1)]))
    assert torch.equal(labels, torch.tensor([3, 7, 1]))
    assert batch.dtype == torch.float32 and batch.max() <= 1


def test_digits_splits_are_disjoint_fixed_and_independent_of_the_training_seed() -> None:
    first, second = DigitsDataModule(split_seed=0), DigitsDataModule(split_seed=0)
    torch.manual_seed(1)
    first.setup()
    torch.manual_seed(2)
    second.setup()
    assert torch.equal(first.splits["val"].images, second.splits["val"].images)
    sizes = {name: len(split) for name, split in first.splits.items()}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 270 and sizes["val"] == 153
    rows = {name: {tuple(x.flatten().tolist()) for x in split.images} for name, split in first.splits.items()}
    assert len(rows["val"] & rows["test"]) < 5  # the digits data has a few exact duplicates, not whole splits
    other = DigitsDataModule(split_seed=1)
    other.setup()
    assert not torch.equal(first.splits["val"].images, other.splits["val"].images)


def test_train_loader_gives_batches_of_the_configured_size() -> None:
    data = DigitsDataModule(batch_size=32, eval_batch_size=100)
    data.setup()
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (32, 1, 8, 8) and y.shape == (32,)
    assert next(iter(data.val_dataloader()))[0].shape[0] == 100


def test_spec_is_known_before_any_data_is_loaded(tmp_path: Path) -> None:
    data = TorchvisionDataModule("cifar10", data_dir=str(tmp_path / "nothing"), download=False)
    assert data.spec.shape == (3, 32, 32) and data.spec.kind == "image"
    assert not (tmp_path / "nothing").exists()


def test_missing_dataset_without_download_names_the_folder(tmp_path: Path) -> None:
    data = TorchvisionDataModule("fashion_mnist", data_dir=str(tmp_path), download=False)
    data.prepare_data()
    with pytest.raises(DataError, match=r"fashion_mnist is not in .*FashionMNIST/raw.*GENLAB_DATA_DIR"):
        data.setup()


@requires_data("MNIST/raw")
def test_mnist_loads_from_the_read_only_data_dir() -> None:
    root = data_dir()
    data = TorchvisionDataModule("mnist", data_dir=str(root), val_size=5000)
    data.prepare_data()
    data.setup()
    assert {name: len(split) for name, split in data.splits.items()} == {
        "train": 55000,
        "val": 5000,
        "test": 10000,
    }
    assert data.splits["train"].images.dtype == torch.uint8


def write_images(folder: Path, count: int, size: tuple[int, int]) -> None:
    for label in ("cats", "dogs"):
        (folder / label).mkdir(parents=True)
        for i in range(count):
            save_image(torch.rand(3, *size), folder / label / f"{i}.png")


def test_image_folder_resizes_crops_labels_and_caches(tmp_path: Path, monkeypatch) -> None:
    write_images(tmp_path / "images", count=6, size=(20, 30))
    settings = dict(path=str(tmp_path / "images"), cache_dir=str(tmp_path / "cache"), val_size=2, test_size=2)
    data = ImageFolderDataModule(**settings, image_size=16, channels=3)
    assert data.spec.shape == (3, 16, 16)
    data.setup()
    assert data.splits["train"].images.shape == (8, 3, 16, 16)
    all_labels = torch.cat([split.labels for split in data.splits.values()])
    assert sorted(all_labels.tolist()) == [0] * 6 + [1] * 6
    (cached,) = (tmp_path / "cache" / "image_folder").glob("*.pt")
    grey = ImageFolderDataModule(**settings, image_size=8, channels=1)
    grey.setup()
    assert grey.splits["test"].images.shape[1:] == (1, 8, 8)
    assert len(list((tmp_path / "cache" / "image_folder").glob("*.pt"))) == 2, "new size must not reuse the cache"
    # A second load reads the cache instead of decoding; a broken cache file is rebuilt.
    again = ImageFolderDataModule(**settings, image_size=16)
    with monkeypatch.context() as patch:
        patch.setattr(again, "_decode", lambda files: pytest.fail("decoded although cached"))
        again.setup()
    assert torch.equal(again.splits["train"].images, data.splits["train"].images)
    cached.write_bytes(b"broken")
    rebuilt = ImageFolderDataModule(**settings, image_size=16)
    rebuilt.setup()
    assert torch.equal(rebuilt.splits["train"].images, data.splits["train"].images)


def test_image_folder_errors_are_clear(tmp_path: Path) -> None:
    missing = ImageFolderDataModule(path=str(tmp_path / "none"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="is not a folder"):
        missing.setup()
    (tmp_path / "empty").mkdir()
    empty = ImageFolderDataModule(path=str(tmp_path / "empty"), cache_dir=str(tmp_path / "cache"))
    with pytest.raises(DataError, match="holds 0 images"):
        empty.setup()
