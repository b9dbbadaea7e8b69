"""Samplers of the diffusion model: from noise x_T to an image x_0 in `steps` steps along a noising path
(`genlab.models.diffusion_paths`), given a `Denoise` function that returns the net's estimates of x_0 and eps at
(x_t, t). Each sampler yields x after every step, so callers can keep the last one or draw the whole trajectory.

- `ddpm`: ancestral sampling (Ho et al., 2020) with the posterior variance, on `steps` evenly spaced timesteps of
  the schedule (all of them when steps = T; fewer is Nichol & Dhariwal's respacing);
- `ddim`: DDIM (Song et al., 2021) with eta = 0, deterministic: the same noise gives the same image;
- `euler`: Euler steps of flow matching's ODE dx/dt = v(x, t), from t = 1 to t = 0 (deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import torch

from genlab.errors import ConfigError
from genlab.interrupts import stop_if_requested
from genlab.models.diffusion_paths import LinearPath, NoiseSchedule, Objective

SamplerName = Literal["ddpm", "ddim", "euler"]
#: (x_t, t) -> (estimate of x_0, estimate of eps), both float32 and shaped like x_t.
Denoise = Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]

#: The samplers each objective can use, its default first.
SAMPLERS: dict[str, tuple[str, ...]] = {"eps": ("ddim", "ddpm"), "v": ("ddim", "ddpm"), "flow": ("euler",)}


def standard_normal(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Noise shaped like `like`, from `generator` (a CPU generator, so a seed means the same noise on any device)."""
    if generator is None:
        return torch.randn_like(like)
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


@dataclass(frozen=True)
class DDIM:
    """x_u = a_u x0 + sqrt(s_u^2 - sigma^2) eps + sigma z from t to the next time u (Song et al., 2021, eq. 12),
    with sigma = eta (s_u / s_t) sqrt(1 - a_t^2 / a_u^2).

    eta = 0 is DDIM's deterministic sampler; eta = 1 makes sigma^2 the variance of q(x_u | x_t, x_0), so each step
    draws from the posterior at the estimated x_0: DDPM's ancestral sampler. The estimate of x_0 is clipped to the
    image range [-1, 1] and eps recomputed from it (as DDPM's reference sampler does).
    """

    schedule: NoiseSchedule
    eta: float = 0.0

    def trajectory(
        self, denoise: Denoise, noise: torch.Tensor, steps: int, generator: torch.Generator | None = None
    ) -> Iterator[torch.Tensor]:
        x = noise
        for t, u in pairwise(self.schedule.grid(steps)):
            stop_if_requested()
            x = self.step(denoise, x, t, u, generator)
            yield x

    def step(
        self, denoise: Denoise, x: torch.Tensor, t: float, u: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x at the earlier time u from x at time t."""
        x0, _ = denoise(x, t)
        a_t, s_t = self.schedule.scalars(t)
        a_u, s_u = self.schedule.scalars(u)
        x0 = x0.clamp(-1, 1)
        eps = (x - a_t * x0) / s_t
        sigma = self.eta * s_u / s_t * math.sqrt(max(0.0, 1 - (a_t / a_u) ** 2))
        x = a_u * x0 + math.sqrt(max(0.0, s_u**2 - sigma**2)) * eps
        if sigma > 0:
            x = x + sigma * standard_normal(x, generator)
        return x


@dataclass(frozen=True)
class Euler:
    """Euler's method for dx/dt = v = eps - x_0 on the linear path, over `steps` equal steps from t = 1 to 0."""

    path: LinearPath

    def trajectory(
        self, denoise: Denoise, noise: torch.Tensor, steps: int, generator: torch.Generator | None = None
    ) -> Iterator[torch.Tensor]:
        x = noise
        for t, u in pairwise(self.path.grid(steps)):
            stop_if_requested()
            x = self.step(denoise, x, t, u, generator)
            yield x

    def step(
        self, denoise: Denoise, x: torch.Tensor, t: float, u: float, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """x at the earlier time u from x at time t."""
        x0, eps = denoise(x, t)
        return x + (u - t) * (eps - x0)


Sampler = DDIM | Euler


def make_sampler(
    name: str | None, objective: Objective, path: NoiseSchedule | LinearPath, setting: str = "sampler"
) -> Sampler:
    """The sampler called `name` (None: the objective's default) for a model trained with `objective`; `setting`
    names the option in the error for an unknown one."""
    allowed = SAMPLERS[objective]
    name = name or allowed[0]
    if name not in allowed:
        raise ConfigError(
            f"{setting}={name!r} is not a sampler of model.objective={objective}; choose one of {list(allowed)}"
        )
    if name == "euler":
        return Euler(path)
    return DDIM(path, eta=1.0 if name == "ddpm" else 0.0)
