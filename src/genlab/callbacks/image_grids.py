"""Writes a model's pictures (samples, reconstructions, interpolations) to every logger and to PNG files."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torchvision.utils import make_grid, save_image

from genlab.callbacks.media import log_image


class ImageGrids(pl.Callback):
    """Every `every_n_epochs` validation epochs and once when training ends.

    The model's `image_grids(batch, generator)` decides what to draw from the first validation batch; the
    generator is seeded with `seed` each time, so sample grids over training show the same noise.
    Files: `samples/epoch_XXX_<name>.png` over training and `samples/<name>.png` for the final model.
    """

    def __init__(self, dirpath: str, every_n_epochs: int = 1, seed: int = 0) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.batch: torch.Tensor | None = None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if batch_idx == 0 and self.batch is None:
            self.batch = batch[0].detach().cpu()

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._write(trainer, pl_module, prefix=f"epoch_{trainer.current_epoch:03d}_")

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write(trainer, pl_module, prefix="")

    @rank_zero_only
    def _write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        if self.batch is None or not hasattr(pl_module, "image_grids"):
            return
        was_training = pl_module.training
        pl_module.eval()
        grids = pl_module.image_grids(self.batch, torch.Generator().manual_seed(self.seed))
        pl_module.train(was_training)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        for name, (images, nrow) in grids.items():
            grid = make_grid(images.float().cpu(), nrow=nrow, padding=2, pad_value=1.0)
            save_image(grid, self.dirpath / f"{prefix}{name}.png")
            log_image(trainer.loggers, f"samples/{name}", grid, trainer.global_step)
