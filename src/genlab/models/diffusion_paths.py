"""The noising paths of the diffusion model: x_t = a_t x_0 + s_t eps, with eps ~ N(0, I) and x_0 an image in [-1, 1].

`NoiseSchedule` is discrete-time diffusion (Ho et al., 2020): a_t = sqrt(alpha_bar_t), s_t = sqrt(1 - alpha_bar_t)
for t = 0..T, from a `linear` or `cosine` (Nichol & Dhariwal, 2021) schedule. `LinearPath` is flow matching /
rectified flow (Lipman et al., 2023; Liu et al., 2023): a_t = 1 - t, s_t = t for continuous t in [0, 1]. In both,
larger t is noisier, so the net's time input means the same thing. Plain torch, no Lightning.

What the net predicts (`objective`) and how a prediction becomes an estimate of x_0 and of eps is here too, as it
depends only on a_t and s_t: `eps` predicts the noise, `v` predicts v = a_t eps - s_t x_0 (Salimans & Ho, 2022),
`flow` predicts the velocity dx_t/dt = eps - x_0.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from genlab.errors import ConfigError

Objective = Literal["eps", "v", "flow"]
ScheduleKind = Literal["linear", "cosine"]

#: Ho et al.'s linear betas for T = 1000; other T scale both ends by 1000 / T (Nichol & Dhariwal's rule), so that
#: alpha_bar_T stays close to 0 whatever the number of steps.
LINEAR_BETA_START, LINEAR_BETA_END = 1e-4, 0.02
#: The cosine schedule's offset s (it keeps beta_1 from being vanishingly small) and its cap on beta_t near t = T.
COSINE_OFFSET, MAX_BETA = 0.008, 0.999


def linear_betas(timesteps: int) -> torch.Tensor:
    """beta_1..beta_T (float64), evenly spaced."""
    scale = 1000 / timesteps
    betas = torch.linspace(scale * LINEAR_BETA_START, scale * LINEAR_BETA_END, timesteps, dtype=torch.float64)
    return betas.clamp(max=MAX_BETA)


def cosine_alpha_bar(t: torch.Tensor, timesteps: int) -> torch.Tensor:
    """The cosine schedule's closed form f(t) / f(0), f(t) = cos^2(pi / 2 (t / T + s) / (1 + s))."""

    def f(u: torch.Tensor) -> torch.Tensor:
        return torch.cos((u / timesteps + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2

    return f(t) / f(torch.zeros((), dtype=t.dtype))


def cosine_betas(timesteps: int) -> torch.Tensor:
    """beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} (float64), capped at MAX_BETA (only the last steps reach it)."""
    alpha_bars = cosine_alpha_bar(torch.arange(timesteps + 1, dtype=torch.float64), timesteps)
    return (1 - alpha_bars[1:] / alpha_bars[:-1]).clamp(max=MAX_BETA)


def check_positive_steps(steps: int, setting: str) -> None:
    if steps < 1:
        raise ConfigError(f"{setting}={steps}: a sampler needs at least 1 step")


class NoiseSchedule:
    """Discrete-time diffusion with T = `timesteps` steps: `alpha_bars[t]` for t = 0..T (alpha_bars[0] = 1).

    Tables are float64 on the CPU; `coefficients` hands out float32 values on the images' device.
    """

    def __init__(self, kind: ScheduleKind, timesteps: int) -> None:
        betas = {"linear": linear_betas, "cosine": cosine_betas}[kind](timesteps)
        self.kind = kind
        self.timesteps = timesteps
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])  # betas[t], t = 1..T
        self.alpha_bars = torch.cumprod(1 - self.betas, 0)
        self._tables: dict[torch.device, torch.Tensor] = {}

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """a_t = sqrt(alpha_bar_t) and s_t = sqrt(1 - alpha_bar_t) for integer times t (N,), as float32 (N,)."""
        table = self._tables.get(t.device)
        if table is None:  # float32 copies on each device used, so a training step needs no transfer
            table = torch.stack([self.alpha_bars.sqrt(), (1 - self.alpha_bars).sqrt()]).float().to(t.device)
            self._tables[t.device] = table
        a, s = table[:, t]
        return a, s

    def scalars(self, t: int) -> tuple[float, float]:
        """a_t and s_t of one time, in float64 (for samplers)."""
        alpha_bar = float(self.alpha_bars[t])
        return math.sqrt(alpha_bar), math.sqrt(1 - alpha_bar)

    def net_time(self, t: torch.Tensor) -> torch.Tensor:
        """What the net is told: t / T in [0, 1]."""
        return t.float() / self.timesteps

    def training_times(self, n: int, device: torch.device) -> torch.Tensor:
        """t uniform in 1..T (the global random stream)."""
        return torch.randint(1, self.timesteps + 1, (n,), device=device)

    def check_steps(self, steps: int, setting: str = "steps") -> None:
        """A sampler takes 1 to T steps."""
        check_positive_steps(steps, setting)
        if steps > self.timesteps:
            raise ConfigError(
                f"{setting}={steps} is more than the {self.timesteps} steps of the noise schedule (model.timesteps); "
                f"give at most {self.timesteps}"
            )

    def grid(self, steps: int) -> list[int]:
        """`steps` + 1 evenly spaced times from T down to 0 (every time when `steps` = T), for a sampler."""
        self.check_steps(steps)
        # Spacing T / steps >= 1, so the rounded times stay distinct.
        return [round(t) for t in torch.linspace(self.timesteps, 0, steps + 1, dtype=torch.float64).tolist()]


class LinearPath:
    """Flow matching's straight path between data (t = 0) and noise (t = 1), in continuous time."""

    def coefficients(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.float()
        return 1 - t, t

    def scalars(self, t: float) -> tuple[float, float]:
        return 1 - t, t

    def net_time(self, t: torch.Tensor) -> torch.Tensor:
        return t.float()

    def training_times(self, n: int, device: torch.device) -> torch.Tensor:
        """t uniform in [0, 1) (the global random stream)."""
        return torch.rand(n, device=device)

    def check_steps(self, steps: int, setting: str = "steps") -> None:
        """Continuous time: any positive number of steps."""
        check_positive_steps(steps, setting)

    def grid(self, steps: int) -> list[float]:
        """`steps` + 1 evenly spaced times from 1 down to 0."""
        self.check_steps(steps)
        return torch.linspace(1, 0, steps + 1, dtype=torch.float64).tolist()


def _image_shaped(value: torch.Tensor) -> torch.Tensor:
    return value.view(-1, 1, 1, 1)


def noisy(x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """x_t = a_t x_0 + s_t eps; a and s are (N,)."""
    return _image_shaped(a) * x0 + _image_shaped(s) * noise


def target(
    objective: Objective, x0: torch.Tensor, noise: torch.Tensor, a: torch.Tensor, s: torch.Tensor
) -> torch.Tensor:
    """What the net should predict for x_t = a_t x_0 + s_t eps."""
    if objective == "eps":
        return noise
    if objective == "v":
        return _image_shaped(a) * noise - _image_shaped(s) * x0
    return noise - x0  # flow: dx_t/dt on the linear path


def estimates(
    objective: Objective, x_t: torch.Tensor, prediction: torch.Tensor, a: torch.Tensor, s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The net's estimates of x_0 and eps from its `prediction` at x_t (float32, whatever the prediction's dtype)."""
    prediction, a, s = prediction.float(), _image_shaped(a), _image_shaped(s)
    if objective == "eps":
        return (x_t - s * prediction) / a, prediction
    if objective == "v":  # a^2 + s^2 = 1
        return a * x_t - s * prediction, s * x_t + a * prediction
    return x_t - s * prediction, x_t + a * prediction  # flow: a = 1 - t, s = t, prediction = eps - x_0


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The eps consistent with x_t and an estimate of x_0 (after clipping it, say)."""
    return (x_t - _image_shaped(a) * x0) / _image_shaped(s)
