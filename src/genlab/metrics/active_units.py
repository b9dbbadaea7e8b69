"""Active latent units (Burda et al., 2015): dimensions whose posterior mean varies across the data."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ActiveUnits(Metric):
    """Counts latent dimensions u with Var_x(E_q[z_u | x]) > threshold, accumulated over a whole split.

    Sums rather than stored means, so the state is small and reduces across DDP processes by addition.
    """

    full_state_update = False

    def __init__(self, latent_dim: int, threshold: float = 0.01) -> None:
        super().__init__()
        self.threshold = threshold
        self.add_state("total", default=torch.zeros(latent_dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("total_sq", default=torch.zeros(latent_dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, posterior_mean: torch.Tensor) -> None:
        mu = posterior_mean.detach().to(torch.float64)
        self.total += mu.sum(0)
        self.total_sq += mu.pow(2).sum(0)
        self.count += mu.shape[0]

    def compute(self) -> torch.Tensor:
        mean = self.total / self.count
        variance = self.total_sq / self.count - mean.pow(2)
        return (variance > self.threshold).sum().float()
