"""Inpainting and image-to-image with any sampler on any noising path (diffusion and flow matching alike), given
the path's a_t, s_t and one sampler step: the loops are here once, not per family. Images are in [-1, 1].

- RePaint (Lugmayr et al., 2022): at each reverse step the known region is replaced by the original noised forward
  to that step's time; every `jump_length` steps the sample goes `jump_length` steps back up the forward process and
  down again, `resamplings` times in all, so that the filled region has time to agree with the known one. The last
  step reaches t = 0, where the known region is the original itself.
- SDEdit (Meng et al., 2022): noise the image forward to the time `strength` of the way to pure noise, then run the
  sampler from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import torch

from genlab.interrupts import stop_if_requested
from genlab.models.diffusion_paths import LinearPath, NoiseSchedule
from genlab.models.diffusion_samplers import Denoise, standard_normal

#: (denoise, x at time t, t, the earlier time u, generator) -> x at time u: one step of a sampler.
Step = Callable[[Denoise, torch.Tensor, float, float, torch.Generator | None], torch.Tensor]
Path = NoiseSchedule | LinearPath


def noised(path: Path, x0: torch.Tensor, t: float, generator: torch.Generator | None) -> torch.Tensor:
    """A draw of x_t = a_t x_0 + s_t eps."""
    a, s = path.scalars(t)
    return a * x0 + s * standard_normal(x0, generator)


def renoised(path: Path, x: torch.Tensor, u: float, t: float, generator: torch.Generator | None) -> torch.Tensor:
    """x_t drawn from q(x_t | x_u) for the later time t: (a_t / a_u) x_u plus noise of variance
    s_t^2 - (a_t / a_u)^2 s_u^2 (the forward process from u on)."""
    (a_u, s_u), (a_t, s_t) = path.scalars(u), path.scalars(t)
    ratio = a_t / a_u
    return ratio * x + math.sqrt(max(0.0, s_t**2 - (ratio * s_u) ** 2)) * standard_normal(x, generator)


def repaint_schedule(steps: int, jump_length: int, resamplings: int) -> list[int]:
    """The grid positions RePaint visits, 0 (pure noise) to `steps` (t = 0): down one at a time, and at every
    `jump_length`-th position (but the last) back up `jump_length` positions, `resamplings` - 1 times."""
    visits, position, jumped = [0], 0, dict[int, int]()
    while position < steps:
        position += 1
        visits.append(position)
        if position % jump_length == 0 and position < steps and jumped.get(position, 0) < resamplings - 1:
            jumped[position] = jumped.get(position, 0) + 1
            visits.extend(range(position - 1, position - jump_length - 1, -1))
            position -= jump_length
    return visits


def repaint(
    path: Path,
    step: Step,
    denoise: Denoise,
    known: torch.Tensor,
    mask: torch.Tensor,
    steps: int,
    generator: torch.Generator | None,
    jump_length: int,
    resamplings: int,
) -> torch.Tensor:
    """x_0 whose pixels where `mask` is 1 are `known` (both in [-1, 1])."""
    times = path.grid(steps)
    visits = repaint_schedule(steps, jump_length, resamplings)
    x = standard_normal(known, generator)
    for here, there in pairwise(visits):
        stop_if_requested()  # a signal stops a long completion within a step
        if there > here:  # a reverse step, then the known region at the new time
            u = times[there]
            x = torch.where(mask.bool(), noised(path, known, u, generator), step(denoise, x, times[here], u, generator))
        else:  # back up the forward process
            x = renoised(path, x, times[here], times[there], generator)
    return x


def sdedit(
    path: Path,
    step: Step,
    denoise: Denoise,
    x0: torch.Tensor,
    strength: float,
    steps: int,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """x0 noised to the grid's time `strength` of the way from t = 0 to pure noise, then denoised by the sampler's
    remaining steps (strength 0: x0 itself)."""
    times = path.grid(steps)
    first = steps - round(strength * steps)
    x = noised(path, x0, times[first], generator)
    for t, u in pairwise(times[first:]):
        stop_if_requested()
        x = step(denoise, x, t, u, generator)
    return x
