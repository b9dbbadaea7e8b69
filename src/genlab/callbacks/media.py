"""Send an image grid to whichever loggers are active; loggers without images (CSV) are skipped."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger


def log_image(loggers: Iterable[Logger], name: str, grid: torch.Tensor, step: int) -> None:
    """`grid` is one (C, H, W) image in [0, 1], as torchvision.utils.make_grid returns it."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_image(name, grid, global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=name, images=[grid], step=step)
