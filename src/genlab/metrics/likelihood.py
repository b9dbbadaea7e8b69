"""Log-likelihoods, KL terms and bounds for latent-variable models, all in nats, per example."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

LIKELIHOODS = ("bernoulli", "gaussian")


def negative_log_likelihood(
    x: torch.Tensor, params: torch.Tensor, likelihood: str, log_scale: torch.Tensor
) -> torch.Tensor:
    """-log p(x | params) summed over every dimension but the first, in float32 whatever the autocast dtype: the
    loss a training step minimizes, with no elementwise negation over the image (a log-likelihood negates the sum).

    `bernoulli`: params are logits (x in [0, 1], the usual MNIST VAE); `gaussian`: params are means and
    `log_scale` the log standard deviation (a scalar, or one per dimension).
    """
    x, params = x.float(), params.float()
    if likelihood == "bernoulli":
        per_dim = F.binary_cross_entropy_with_logits(params, x, reduction="none")
    elif likelihood == "gaussian":
        log_scale = log_scale.float()
        per_dim = 0.5 * ((x - params) * torch.exp(-log_scale)) ** 2 + log_scale + 0.5 * math.log(2 * math.pi)
    else:
        raise ValueError(f"unknown likelihood {likelihood!r}; expected one of {LIKELIHOODS}")
    return per_dim.flatten(1).sum(1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension, shape (N, latent_dim)."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)


def gaussian_log_prob(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(z; mu, exp(logvar)) summed over the last dimension."""
    return (-0.5 * ((z - mu) ** 2 * torch.exp(-logvar) + logvar + math.log(2 * math.pi))).sum(-1)


def importance_weighted_bound(log_weights: torch.Tensor) -> torch.Tensor:
    """log (1/k) sum_k w_k for log-weights of shape (k, N): the IWAE lower bound on log p(x) (Burda et al., 2015)."""
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


def bits_per_dim(nats: torch.Tensor | float, num_dims: int) -> torch.Tensor | float:
    """Convert a per-example value in nats to bits per dimension."""
    return nats / (num_dims * math.log(2))


def _log_normal_mass(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower < upper, computed in the tail the interval lies in (no cancellation)."""
    in_lower_tail = (lower + upper) < 0
    low, high = torch.where(in_lower_tail, lower, -upper), torch.where(in_lower_tail, upper, -lower)
    log_high, log_low = torch.special.log_ndtr(high), torch.special.log_ndtr(low)
    return log_high + torch.log1p(-torch.exp(log_low - log_high))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """log P(x) per dimension for 8-bit values scaled to [-1, 1], under a Gaussian binned at the 256 levels (Ho et
    al., 2020): each level owns the interval +-1/255 around it, the end levels everything beyond them."""
    x, mean, log_scale = x.float(), mean.float(), log_scale.float()
    half_bin = 1 / 255
    inverse_scale = torch.exp(-log_scale)
    lower = torch.where(x < -1 + half_bin, -torch.inf, (x - mean - half_bin) * inverse_scale)
    upper = torch.where(x > 1 - half_bin, torch.inf, (x - mean + half_bin) * inverse_scale)
    return _log_normal_mass(lower, upper)
