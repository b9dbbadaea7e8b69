"""Generating with a masked LM: start from [MASK] at every position to generate and reveal them over `steps` steps.

`ancestral` is MDLM's sampler: going from time t to s = t - 1/steps, each masked token is revealed with chance
(t - s) / t (the log-linear schedule's reverse step), as a token drawn from the net's p(x0 | x_t); the last step
reveals the rest. Where a step reveals nothing, neither the net nor the draw runs, so with more steps than positions
most steps cost nothing (MDLM's caching). `confidence` is MaskGIT's order: each step draws every masked position and
keeps the most probable draws, as many as the schedule reveals, so the easy positions come first.

Positions that are not [MASK] at the start (a prompt, the context around a gap) are never changed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from genlab.models.masked_diffusion import LogLinearSchedule
from genlab.nets.transformer import GPT

#: x (B, T) -> log p(x0 | x) (B, T, V), with no mass on [MASK] (SUBS).
Denoiser = Callable[[Tensor], Tensor]
Order = Literal["ancestral", "confidence"]


def unmask(
    denoise: Denoiser,
    x: Tensor,
    mask_id: int,
    steps: int,
    order: Order = "ancestral",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """x with every [MASK] position filled in, revealed over at most `steps` steps."""
    schedule = LogLinearSchedule()
    x = x.clone()
    for i in range(steps):
        masked = x == mask_id
        if not bool(masked.any()):
            break
        chance = schedule.reveal_chance(1 - i / steps, 1 - (i + 1) / steps)
        if order == "ancestral":
            reveal = masked & (torch.rand(x.shape, generator=generator, device=x.device) < chance)
            if bool(reveal.any()):  # else x is unchanged: no net call, no draw
                x[reveal] = GPT._sample(denoise(x)[reveal], temperature, top_k, top_p, generator)[:, 0]
        else:
            log_probs = denoise(x)
            drawn = GPT._sample(log_probs[masked], temperature, top_k, top_p, generator)[:, 0]
            proposal = x.masked_scatter(masked, drawn)
            x = torch.where(most_confident(log_probs, proposal, masked, chance), proposal, x)
    return x


def most_confident(log_probs: Tensor, proposal: Tensor, masked: Tensor, fraction: float) -> Tensor:
    """Where to reveal (B, T): in each row, the `fraction` (rounded up) of its masked positions whose drawn token is
    the most probable."""
    confidence = log_probs.gather(-1, proposal[..., None])[..., 0].masked_fill(~masked, float("-inf"))
    count = torch.ceil(masked.sum(dim=1) * fraction).long()
    rank = confidence.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
    return masked & (rank < count[:, None])
