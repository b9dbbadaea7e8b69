"""Send images and text to whichever loggers are active; loggers without media (CSV) are skipped."""

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


def log_text(loggers: Iterable[Logger], name: str, text: str, step: int) -> None:
    """Plain text: TensorBoard's text tab renders Markdown, so it is sent as a code block to keep line breaks."""
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_text(name, f"```\n{text}\n```", global_step=step)
        elif isinstance(logger, WandbLogger):
            logger.log_text(key=name, columns=["step", "text"], data=[[step, text]], step=step)
