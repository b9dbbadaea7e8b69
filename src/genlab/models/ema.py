"""The exponential moving average of a net's weights that the GAN's generator and the diffusion model's denoiser
sample from: one mechanism, saved in checkpoints as a submodule of the model."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from genlab.upstream import foreach_blend_, foreach_copy_


def ema_with_warmup(decay: float) -> Callable[..., None]:
    """EMA update with the decay ramped as min(decay, (1 + n) / (10 + n)) over the n updates so far.

    Without the ramp a 0.999 average of a short run would still be mostly the random initial weights.
    """

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        if not averaged[0].is_floating_point():  # integer buffers (batch norm's counters) are copied
            foreach_copy_(averaged, current)
            return
        weight = torch.clamp((1 + updates) / (10 + updates), max=decay)  # a tensor: no device sync
        foreach_blend_(averaged, current, weight)

    return update


def ema_copy(module: nn.Module, decay: float) -> AveragedModel | None:
    """An averaged copy of `module` (weights and buffers) to update with `.update_parameters(module)` after each
    optimizer step, or None when `decay` is 0. It takes no gradients, so DDP leaves it alone; its state_dict keys
    are `module.<name>` and `n_averaged`."""
    if decay == 0:
        return None
    averaged = AveragedModel(module, multi_avg_fn=ema_with_warmup(decay), use_buffers=True)
    return averaged.requires_grad_(False)
