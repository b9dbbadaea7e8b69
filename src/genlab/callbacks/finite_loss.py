"""Stop at the first non-finite training loss with one clear line, before it reaches the weights or a checkpoint.

The check runs in `on_before_backward`, which Lightning calls for every backward pass: automatic optimization's and
each `manual_backward` of a model that steps its own optimizers (the GAN's two losses), so the step that made the
NaN is the one reported, and no optimizer has applied it yet.
"""

from __future__ import annotations

import math
import re

import pytorch_lightning as pl
import torch

from genlab.errors import NON_FINITE_ADVICE, NumericalError
from genlab.models.base import GenerativeModel
from genlab.settings import PositiveInt


class NonFiniteLossError(NumericalError):
    """The training loss became NaN or infinite."""


def non_finite_loss(trainer: pl.Trainer, name: str, loss: torch.Tensor) -> NonFiniteLossError:
    value = loss.detach().float()
    shown = value.item() if value.numel() == 1 else value[~torch.isfinite(value)][0].item()
    return NonFiniteLossError(
        f"{name} became {shown} at step {trainer.global_step} (batch {trainer.fit_loop.epoch_loop.batch_idx} of "
        f"epoch {trainer.current_epoch}); {NON_FINITE_ADVICE}; the checkpoints saved before it are kept"
    )


class StopOnNonFiniteLoss(pl.Callback):
    """Checks the loss of every backward pass every `every_n_steps` steps (each check waits for the device)."""

    def __init__(self, every_n_steps: PositiveInt = 1) -> None:
        self.every_n_steps = every_n_steps

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        if trainer.global_step % self.every_n_steps or is_finite(loss):
            return
        name = pl_module.backward_name if isinstance(pl_module, GenerativeModel) else "train/loss"
        raise non_finite_loss(trainer, name, loss)


def is_finite(loss: torch.Tensor) -> bool:
    """Whether every value of `loss` is finite; a scalar loss (the usual one) as one Python number, which is a
    twentieth of `torch.isfinite(loss).all()`'s cost on a CPU (about 1 against 24 microseconds per step)."""
    if loss.numel() == 1:
        return math.isfinite(loss.detach().item())
    return bool(torch.isfinite(loss).all())


_ANOMALY = re.compile(r"Function '(\w+)' returned (nan|inf) values in its (\d+)\w* output")


def anomaly_error(exc: BaseException, step: int) -> NonFiniteLossError | None:
    """One line for what `trainer.detect_anomaly=true` found (autograd's RuntimeError naming the backward op)."""
    found = _ANOMALY.search(str(exc)) if isinstance(exc, RuntimeError) else None
    if found is None:
        return None
    op, value, output = found.groups()
    forward = op.removesuffix("Backward0").removesuffix("Backward1")
    return NonFiniteLossError(
        f"trainer.detect_anomaly found {value} in the gradient at step {step}: the backward of {forward} "
        f"({op}, output {output}) returned it (its forward call is in the warning above); {NON_FINITE_ADVICE}"
    )
