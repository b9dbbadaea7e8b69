"""Within-class quality and diversity of a class-conditional model: intra-FID (the Frechet distance between real and
generated features of each class, averaged over the classes; Miyato & Koyama 2018 report it for conditional GANs) and
the class spread (generated over real feature variance within each class: 1 is as varied as the data, near 0 is one
image per class). FID over all classes misses a model that draws one good image per class: each class's image is
different, so the pooled features look varied."""

from __future__ import annotations

import torch
from torchmetrics import Metric


def frechet_distance(
    mean_a: torch.Tensor, cov_a: torch.Tensor, mean_b: torch.Tensor, cov_b: torch.Tensor
) -> torch.Tensor:
    """||mu_a - mu_b||^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)); the trace of the square root is the sum of the
    square roots of the eigenvalues of S_a S_b (real and non-negative up to rounding)."""
    root_trace = torch.linalg.eigvals(cov_a @ cov_b).sqrt().real.sum()
    return (mean_a - mean_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * root_trace


class IntraFID(Metric):
    """Per-class sums of features and their outer products, for real and generated images; `compute()` gives
    (intra-FID per class, spread per class), each of shape (num_classes,), NaN for a class with fewer than two
    images of either kind. The states are sums (`dist_reduce_fx="sum"`), so processes of a DDP run add up.

    With few images per class (100 of each in 128 features) every class's FID is biased upwards, as FID is on small
    sets: compare runs measured with the same counts.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, num_classes: int, num_features: int) -> None:
        super().__init__()
        for kind in ("real", "fake"):
            self.add_state(f"{kind}_n", torch.zeros(num_classes, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(
                f"{kind}_sum", torch.zeros(num_classes, num_features, dtype=torch.float64), dist_reduce_fx="sum"
            )
            self.add_state(
                f"{kind}_outer",
                torch.zeros(num_classes, num_features, num_features, dtype=torch.float64),
                dist_reduce_fx="sum",
            )

    def update(self, features: torch.Tensor, labels: torch.Tensor, real: bool) -> None:
        kind = "real" if real else "fake"
        features = features.double()
        labels = labels.to(features.device)
        getattr(self, f"{kind}_n").index_add_(0, labels, torch.ones_like(labels, dtype=torch.float64))
        getattr(self, f"{kind}_sum").index_add_(0, labels, features)
        getattr(self, f"{kind}_outer").index_add_(0, labels, features.unsqueeze(2) * features.unsqueeze(1))

    def _moments(self, kind: str, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = getattr(self, f"{kind}_n")[k]
        mean = getattr(self, f"{kind}_sum")[k] / n
        cov = (getattr(self, f"{kind}_outer")[k] - n * torch.outer(mean, mean)) / (n - 1)
        return mean, cov

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        classes = len(self.real_n)
        fid = torch.full((classes,), float("nan"), dtype=torch.float64)
        spread = torch.full((classes,), float("nan"), dtype=torch.float64)
        for k in range(classes):
            if self.real_n[k] < 2 or self.fake_n[k] < 2:
                continue
            (real_mean, real_cov), (fake_mean, fake_cov) = self._moments("real", k), self._moments("fake", k)
            fid[k] = frechet_distance(real_mean, real_cov, fake_mean, fake_cov)
            spread[k] = fake_cov.trace() / real_cov.trace()
        return fid, spread
