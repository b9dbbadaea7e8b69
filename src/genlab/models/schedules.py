"""Learning-rate schedules built from config (`_partial_: true`), stepped once per optimizer step."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from genlab.errors import check
from genlab.settings import NonNegativeFloat, NonNegativeInt, PositiveInt


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: NonNegativeInt, decay_steps: PositiveInt, min_lr: NonNegativeFloat
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the optimizer's lr over `warmup_steps`, cosine decay to `min_lr` at `decay_steps`, then flat.

    nanoGPT's schedule; `min_lr` is absolute (nanoGPT: lr 1e-3 decaying to 1e-4).
    """
    check(warmup_steps <= decay_steps, f"need warmup_steps <= decay_steps, got {warmup_steps}, {decay_steps}")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    check(all(min_lr <= lr for lr in base_lrs), f"min_lr={min_lr} exceeds the optimizer's lr {max(base_lrs)}")

    def factor(step: int, base_lr: float) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        if step >= decay_steps:
            return min_lr / base_lr
        progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return (min_lr + cosine * (base_lr - min_lr)) / base_lr

    return LambdaLR(optimizer, [lambda step, lr=lr: factor(step, lr) for lr in base_lrs])
