"""Stop at the first non-finite training loss with one clear line, before NaNs reach a checkpoint."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

from genlab.errors import GenlabError
from genlab.settings import PositiveInt


class NonFiniteLossError(GenlabError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(pl.Callback):
    """Checks the loss every `every_n_steps` steps (each check waits for the device, so not always every step)."""

    def __init__(self, every_n_steps: PositiveInt = 1) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if trainer.global_step % self.every_n_steps:
            return
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss).all():
            raise NonFiniteLossError(
                f"train/loss became {loss.item()} at batch {batch_idx} of epoch {trainer.current_epoch}; "
                f"lower the learning rate (model.optimizer.lr), clip gradients (trainer.gradient_clip_val) "
                f"or check the data; the checkpoints saved so far are kept"
            )
