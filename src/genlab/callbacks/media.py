"""Send images and text to whichever loggers are active; loggers without media (CSV) are skipped."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image

from genlab.files import atomic_write


def save_grid(images: torch.Tensor, nrow: int, path: Path | BinaryIO) -> torch.Tensor:
    """Tile images in [0, 1] into one picture (white 2-px gaps), write it as a PNG (to a file or a binary stream)
    and return it for the loggers.

    One layout for the pictures written during training, genlab-sample's and genlab-serve's.
    """
    grid = make_grid(images.float().cpu(), nrow=nrow, padding=2, pad_value=1.0)
    if isinstance(path, Path):
        with atomic_write(path) as partial:
            save_image(grid, partial, format="png")
    else:
        save_image(grid, path, format="png")
    return grid


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


def log_histogram(loggers: Iterable[Logger], name: str, counts: torch.Tensor, step: int) -> None:
    """Counts per integer bin 0..K-1 (e.g. predicted classes), shown as a histogram in TensorBoard."""
    edges = torch.arange(len(counts) + 1, dtype=torch.float64) - 0.5
    values = torch.repeat_interleave(torch.arange(len(counts), dtype=torch.float64), counts)
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_histogram(name, values, global_step=step, bins=edges.numpy())
