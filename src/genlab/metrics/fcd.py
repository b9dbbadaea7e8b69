"""Frechet ChemNet Distance (Preuer et al. 2018): the Frechet distance between Gaussians fitted to the penultimate
activations of ChemNet for two sets of molecules, as MOSES reports it (`FCD/Test`).

ChemNet and its weights come from the `fcd-torch` package, which ships them inside itself
(`fcd_torch/ChemNet_v0.13_pretrained.pt`): nothing is downloaded. The statistics of a reference set (the test
molecules) are computed once and cached in `cache_dir`, keyed by the molecules themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from genlab.cache import cached
from genlab.data.smiles import canonical
from genlab.errors import DataError
from genlab.extras import import_extra

#: Bump when the features change, so cached statistics are recomputed.
FEATURES_VERSION = "fcd_torch-ChemNet_v0.13"


@dataclass(frozen=True)
class Statistics:
    """Mean and covariance of ChemNet activations (float64) and the number of molecules behind them."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int


def frechet_distance(a: Statistics, b: Statistics) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^1/2).

    The trace of the square root is the sum of the square roots of the eigenvalues of S_a S_b (real and
    non-negative for two covariances; round-off is clipped), which needs no matrix square root that can fail.
    """
    eigenvalues = np.linalg.eigvals(a.covariance @ b.covariance)
    root_trace = np.sqrt(np.clip(eigenvalues.real, 0, None)).sum()
    difference = a.mean - b.mean
    return float(difference @ difference + np.trace(a.covariance) + np.trace(b.covariance) - 2 * root_trace)


class ChemNet:
    """ChemNet's penultimate layer (512 features) for SMILES, from fcd-torch's packaged weights, on `device`."""

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 512) -> None:
        fcd_torch = import_extra("fcd_torch", "chem", "the FCD metric")
        # Builds the net from the weights file inside the package (fcd_torch.FCD takes no other source by default).
        self.net = fcd_torch.FCD(device="cpu", n_jobs=1, batch_size=batch_size).model.requires_grad_(False)
        self.dataset = import_extra("fcd_torch.utils", "chem", "the FCD metric").SmilesDataset
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def features(self, smiles: Sequence[str]) -> np.ndarray:
        """(N, 512) activations of SMILES as given (one-hot, 350 symbols). FCD is defined on canonical SMILES:
        give `genlab.data.smiles.canonical` ones (ChemNet reads any string, so this does not check them)."""
        self.net.to(self.device)
        loader = DataLoader(self.dataset(list(smiles), canonize=False), batch_size=self.batch_size)
        batches = [self.net(batch.transpose(1, 2).float().to(self.device)).double().cpu() for batch in loader]
        return torch.cat(batches).numpy() if batches else np.zeros((0, 512))

    def statistics(self, smiles: Sequence[str]) -> Statistics | None:
        """Mean and covariance of the features, or None for fewer than two molecules (no covariance)."""
        if len(smiles) < 2:
            return None
        features = self.features(smiles)
        return Statistics(features.mean(0), np.cov(features, rowvar=False), len(features))

    def reference_statistics(self, smiles: Sequence[str], cache_dir: str | Path) -> Statistics:
        """The statistics of a reference set's valid molecules (canonicalized here), computed once and then read from
        `cache_dir`."""
        digest = hashlib.sha256(f"{FEATURES_VERSION}\n".encode() + "\n".join(smiles).encode()).hexdigest()[:20]

        def build() -> Statistics:
            statistics = self.statistics([s for s in canonical(smiles) if s is not None])
            if statistics is None:
                raise DataError(f"FCD needs at least two valid reference molecules, got {len(smiles)}; use more data")
            return statistics

        def load(path: Path) -> Statistics:
            with np.load(path) as saved:
                return Statistics(saved["mean"], saved["covariance"], int(saved["count"]))

        def save(statistics: Statistics, path: Path) -> None:
            with path.open("wb") as file:  # a file object: np.savez would add .npz to a temporary name
                np.savez(file, mean=statistics.mean, covariance=statistics.covariance, count=statistics.count)

        path = Path(cache_dir).expanduser() / "molecules" / f"chemnet-{digest}.npz"
        return cached(path, build, load, save, "FCD reference statistics").value
