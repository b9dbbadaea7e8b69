"""The discrete-time variational bound of a diffusion model on 8-bit images (Ho et al., 2020, eq. 5; Nichol &
Dhariwal, 2021), in nats per image:

    -log p(x_0) <= L_T + sum_{t=2}^{T} L_{t-1} + L_0
    L_T     = KL(q(x_T | x_0) || N(0, I))
    L_{t-1} = E_q KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))
    L_0     = -log p(x_0 | x_1), a Gaussian discretized at the 256 pixel levels.

The reverse process p(x_{t-1} | x_t) is the Gaussian with the posterior mean at the net's (clipped) estimate of x_0
and variance beta_t (Ho et al.'s choice for their bound). Both Gaussians of L_{t-1} then share their mean's x_t
part, so the KL is a constant of t (the variances' mismatch, summed exactly) plus c_t^2 ||x_0 - x0_hat||^2 /
(2 beta_t), c_t = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t). An exact denoiser still pays the constants and
L_0 (about 2.2 bits/dim with Ho et al.'s linear schedule, mostly L_0's decoder of scale sqrt(beta_1)).

The sum of the squared-error parts costs one forward pass per term. `terms` = K < T - 1 estimates it without bias:
{2..T} is cut into K equal strata, one t is drawn uniformly in each, per image, and weighted by its stratum's size
(far less variance than K uniform draws). Each term is itself estimated with one draw of x_t, as usual.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import torch

from genlab.metrics.likelihood import discretized_gaussian_log_likelihood, gaussian_kl
from genlab.models.diffusion_paths import NoiseSchedule, noisy

#: (x_t, t) -> the net's estimate of x_0 at integer times t (N,), clipped to [-1, 1].
EstimateX0 = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def strata(timesteps: int, terms: int | None) -> list[tuple[int, int]]:
    """[first, last] of min(terms, T - 1) near-equal runs covering 2..T (each a single t when terms is None)."""
    count = timesteps - 1 if terms is None else min(terms, timesteps - 1)
    edges = [2 + round(k * (timesteps - 1) / count) for k in range(count + 1)] if count > 0 else []
    return [(first, following - 1) for first, following in pairwise(edges)]


def negative_elbo(
    schedule: NoiseSchedule, estimate_x0: EstimateX0, x0: torch.Tensor, terms: int | None = None
) -> torch.Tensor:
    """The bound on -log p(x_0) in nats per image, shape (N,), for images x0 in [-1, 1] on the 256-level grid.

    Draws times and noise from the global random stream: wrap the call in a fixed seed for repeatable numbers.
    """
    n, device = len(x0), x0.device
    x0 = x0.float()
    alpha_bars, betas = schedule.alpha_bars, schedule.betas

    a_T, s_T = schedule.scalars(schedule.timesteps)
    total = gaussian_kl(a_T * x0.flatten(1), torch.full_like(x0.flatten(1), 2 * math.log(s_T))).sum(1)

    ones = torch.ones(n, dtype=torch.long, device=device)
    x1 = noisy(x0, torch.randn_like(x0), *schedule.coefficients(ones))
    decoder_log_scale = torch.full_like(x0, 0.5 * math.log(float(betas[1])))
    total = total - discretized_gaussian_log_likelihood(x0, estimate_x0(x1, ones), decoder_log_scale).flatten(1).sum(1)

    t = torch.arange(2, schedule.timesteps + 1)
    beta, posterior_variance = betas[t], betas[t] * (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t])
    mismatch = 0.5 * (torch.log(beta / posterior_variance) + posterior_variance / beta - 1).sum()
    total = total + float(mismatch) * x0[0].numel()

    for first, last in strata(schedule.timesteps, terms):
        t = torch.randint(first, last + 1, (n,))
        weight = alpha_bars[t - 1] * betas[t] / (1 - alpha_bars[t]) ** 2 / 2  # c_t^2 / (2 beta_t)
        t = t.to(device)
        x_t = noisy(x0, torch.randn_like(x0), *schedule.coefficients(t))
        squared_error = (x0 - estimate_x0(x_t, t)).pow(2).flatten(1).sum(1)
        total = total + (last - first + 1) * weight.float().to(device) * squared_error
    return total
