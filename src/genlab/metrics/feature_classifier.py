"""A small CNN classifier of the training data whose penultimate layer gives offline FID/KID features.

Inception-v3 features need a weights download and describe 8x8 or 28x28 grey digits poorly; a classifier trained on
the data itself needs neither, takes seconds to train, and its predicted classes also measure mode coverage. Numbers
from it compare runs on the same data only (they are not the FID of papers, which use Inception features).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from genlab.cache import cached
from genlab.data.spec import DataSpec
from genlab.data.tensor_dataset import InMemoryImages
from genlab.errors import ConfigError

log = logging.getLogger(__name__)

#: Part of the cache key: change it whenever the architecture or its training changes, so old weights are not reused.
ARCH_VERSION = "cnn-v1"
#: Dimensions of the features FID and KID are computed on.
FEATURE_DIM = 128


class FeatureClassifier(nn.Module):
    """Three conv blocks, global average pooling, a `FEATURE_DIM` feature layer and a linear head.

    Pooling globally makes one net fit 8x8 to 64x64 images. Inputs are float images in [0, 1], (N, C, H, W).
    """

    def __init__(self, channels: int, num_classes: int, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = channels
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            in_channels = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_layer = nn.Sequential(nn.Linear(in_channels, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, num_classes)
        self.num_features = FEATURE_DIM  # read by torchmetrics' FID for a custom feature module

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The (N, FEATURE_DIM) features FID and KID compare."""
        return self.feature_layer(self.body(x * 2 - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits (N, num_classes)."""
        return self.head(self.features(x))


@dataclass
class LoadedClassifier:
    net: FeatureClassifier
    #: Fraction of the test split classified correctly.
    accuracy: float
    path: Path
    #: True when this call trained the net, False when it came from the cache.
    trained: bool


def cache_path(cache_dir: str | Path, spec: DataSpec, train: InMemoryImages) -> Path:
    """Keyed by dataset name, shape, train size, a hash of the train split's content and ARCH_VERSION.

    The content hash (a fraction of a second even for MNIST) keeps two image folders of one size and shape apart.
    """
    digest = hashlib.sha1(train.images.numpy().tobytes())
    digest.update(train.labels.numpy().tobytes())
    shape = "x".join(str(s) for s in spec.shape)
    name = f"{spec.name or 'images'}-{shape}-n{len(train)}-{digest.hexdigest()[:12]}-{ARCH_VERSION}.pt"
    return Path(cache_dir) / "feature_classifier" / name


def train_classifier(
    train: InMemoryImages,
    num_classes: int,
    steps: int | None = None,
    batch_size: int = 128,
    lr: float = 2e-3,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> FeatureClassifier:
    """Adam on in-memory batches for `steps` steps: by default 2 epochs, but at least 100 and at most 300 steps.

    300 steps of 128 images (0.7 epochs of MNIST) take about 20 s on one CPU thread; 100 steps of 8x8 digits, 1 s.
    """
    if steps is None:
        steps = min(300, max(100, 2 * math.ceil(len(train) / batch_size)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = FeatureClassifier(train.images.shape[1], num_classes).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    order = torch.Generator().manual_seed(seed)
    net.train()
    step = 0
    while step < steps:
        for index in torch.randperm(len(train), generator=order).split(batch_size):
            if step == steps:
                break
            images, labels = train[index]
            loss = F.cross_entropy(net(images.to(device)), labels.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
    return net.eval().requires_grad_(False)


@torch.no_grad()
def accuracy(net: FeatureClassifier, split: InMemoryImages, batch_size: int = 1000) -> float:
    device = next(net.parameters()).device
    correct = 0
    for index in torch.arange(len(split)).split(batch_size):
        images, labels = split[index]
        correct += int((net(images.to(device)).argmax(1).cpu() == labels).sum())
    return correct / len(split)


def require_labels(spec: DataSpec) -> None:
    """The classifier learns the data's labels: unlabelled data needs Inception features instead."""
    if spec.num_classes is None:
        raise ConfigError(
            f"metrics.features=classifier trains a classifier on the data's labels, but data={spec.name or '?'} "
            f"has none; use metrics.features=inception metrics.inception_weights=PATH, or metrics=none"
        )


def load_or_train(
    spec: DataSpec,
    train: InMemoryImages,
    test: InMemoryImages,
    cache_dir: str | Path,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> LoadedClassifier:
    """The feature classifier of this data: from the cache, else trained on `train`, scored on `test` and cached."""
    require_labels(spec)
    channels, num_classes = spec.shape[0], spec.num_classes

    def build() -> tuple[FeatureClassifier, float]:
        net = train_classifier(train, num_classes, seed=seed, device=device)
        return net, accuracy(net, test)

    def load(path: Path) -> tuple[FeatureClassifier, float]:
        content = torch.load(path, map_location="cpu", weights_only=True)
        net = FeatureClassifier(channels, num_classes)
        net.load_state_dict(content["state_dict"])
        return net.eval().requires_grad_(False), float(content["accuracy"])

    def save(value: tuple[FeatureClassifier, float], path: Path) -> None:
        torch.save({"state_dict": value[0].state_dict(), "accuracy": value[1], "arch": ARCH_VERSION}, path)

    entry = cached(cache_path(cache_dir, spec, train), build, load, save, "feature classifier")
    net, acc = entry.value
    return LoadedClassifier(net.to(device), acc, entry.path, trained=entry.built)
