"""Writes what a model can draw (image grids, text continuations) to every logger and to files in `samples/`."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from genlab.callbacks.media import MIN_IMAGE_SIZE, log_image, log_text, save_grid
from genlab.files import write_text_atomically
from genlab.models.contracts import Grid, ImageGenerator, SequenceGenerator, image_grids_of
from genlab.settings import PositiveInt


class SampleWriter(pl.Callback):
    """Every `every_n_epochs` validation epochs and once when training ends.

    An `ImageGenerator`'s `image_grids(images, generator)` are drawn from the first validation batch (conditional
    models also get its labels, see `genlab.models.contracts.image_grids_of`), a `SequenceGenerator`'s
    `text_samples(seed)`. The randomness is reseeded with `seed` each time, so samples over training show the same
    noise and prompts. Files: `samples/epoch_XXX_<name>.png|txt` over training, `samples/<name>.png|txt` at the end.
    """

    def __init__(
        self, dirpath: str, every_n_epochs: PositiveInt = 1, seed: int = 0, min_image_size: PositiveInt = MIN_IMAGE_SIZE
    ) -> None:
        self.dirpath = Path(dirpath)
        self.min_image_size = min_image_size
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self.batch is None:
            self.batch = (batch[0].detach().cpu(), batch[1].detach().cpu())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == "fit"  # not the final trainer.validate of the best checkpoint
        if not fitting or trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._write(trainer, pl_module, prefix=f"epoch_{trainer.current_epoch:03d}_")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, prefix="")

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        was_training = pl_module.training
        pl_module.eval()
        try:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            if isinstance(pl_module, ImageGenerator) and self.batch is not None:
                self._write_images(trainer, pl_module, prefix)
            if isinstance(pl_module, SequenceGenerator):
                self._write_texts(trainer, pl_module, prefix)
        finally:
            pl_module.train(was_training)

    def _write_images(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        grids = image_grids_of(pl_module, self.batch, torch.Generator().manual_seed(self.seed))
        for name, value in grids.items():
            images, nrow, rows = Grid(*value)
            grid = save_grid(images, nrow, self.dirpath / f"{prefix}{name}.png", rows, self.min_image_size)
            log_image(trainer.loggers, f"samples/{name}", grid, trainer.global_step)

    def _write_texts(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        for name, text in pl_module.text_samples(self.seed).items():
            write_text_atomically(self.dirpath / f"{prefix}{name}.txt", text)
            log_text(trainer.loggers, f"samples/{name}", text, trainer.global_step)
