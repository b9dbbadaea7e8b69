"""Intra-FID and the class spread on feature sets with known answers: against torchmetrics' FID class by class, a
class collapsed to one image, and the sums of two halves (as DDP processes reduce them) equal to the whole."""

from __future__ import annotations

import pytest
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from genlab.callbacks.sample_quality import PrecomputedFeatures
from genlab.metrics.intra_fid import IntraFID


def features(n: int, classes: int, dim: int, seed: int, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % classes
    return torch.randn(n, dim, generator=generator) + labels[:, None] * 2.0 + shift, labels


def test_each_class_is_torchmetrics_fid_of_that_class_and_collapse_shows_in_the_spread() -> None:
    real, real_labels = features(600, 3, 8, seed=0)
    fake, fake_labels = features(600, 3, 8, seed=1, shift=0.5)
    fake[fake_labels == 2] = fake[fake_labels == 2][0] + 1e-3 * torch.randn(200, 8)  # class 2: one image
    metric = IntraFID(3, 8)
    metric.update(real, real_labels, real=True)
    metric.update(fake, fake_labels, real=False)
    fid, spread = metric.compute()
    for k in range(3):
        reference = FrechetInceptionDistance(feature=PrecomputedFeatures(8))
        reference.update(real[real_labels == k].double(), real=True)
        reference.update(fake[fake_labels == k].double(), real=False)
        assert fid[k].item() == pytest.approx(reference.compute().item(), rel=1e-4, abs=1e-4), k
    assert spread[0].item() == pytest.approx(1.0, abs=0.3) and spread[2].item() < 1e-4
    assert fid[2] > 5 * fid[0], "a collapsed class is far from its real images"


def test_halves_add_up_to_the_whole_and_a_class_without_images_is_nan() -> None:
    real, labels = features(200, 4, 5, seed=2)
    fake, _ = features(200, 4, 5, seed=3)
    keep = labels != 3  # no image of class 3
    whole, halves = IntraFID(4, 5), [IntraFID(4, 5), IntraFID(4, 5)]
    whole.update(real[keep], labels[keep], real=True)
    whole.update(fake[keep], labels[keep], real=False)
    for i, half in enumerate(halves):
        part = keep & (torch.arange(200) % 2 == i)
        half.update(real[part], labels[part], real=True)
        half.update(fake[part], labels[part], real=False)
    merged = halves[0]
    merged.merge_state(halves[1])
    (fid, spread), (merged_fid, merged_spread) = whole.compute(), merged.compute()
    assert torch.allclose(fid[:3], merged_fid[:3]) and torch.allclose(spread[:3], merged_spread[:3])
    assert fid[3].isnan() and spread[3].isnan()
