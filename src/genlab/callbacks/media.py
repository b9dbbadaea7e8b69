"""Send images and text to whichever loggers are active; loggers without media (CSV) are skipped."""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from pytorch_lightning.loggers import Logger, TensorBoardLogger, WandbLogger
from torchvision.utils import make_grid, save_image

from genlab.files import atomic_write

#: Images smaller than this (pixels, the shorter side) are enlarged by a whole factor, nearest-neighbour, before they
#: are tiled: 8x8 digits become 64x64, MNIST 84x84, CIFAR-10 64x64; at their own size a grid of digits is a stamp.
MIN_IMAGE_SIZE = 64
PADDING = 2


def upscale(images: torch.Tensor, min_size: int) -> torch.Tensor:
    """(N, C, H, W) enlarged by the smallest whole factor that makes min(H, W) >= min_size (nearest neighbour:
    every pixel stays a sharp block, nothing is invented)."""
    factor = max(1, math.ceil(min_size / min(images.shape[-2:])))
    return images.repeat_interleave(factor, -2).repeat_interleave(factor, -1) if factor > 1 else images


def label_rows(grid: torch.Tensor, labels: list[str], row_height: int) -> torch.Tensor:
    """The grid with a white column on its left holding one label per row, centred on the row."""
    from PIL import Image, ImageDraw

    font = ImageDraw.ImageDraw(Image.new("L", (1, 1))).getfont()
    width = max(int(font.getlength(label)) for label in labels) + 2 * PADDING + 4
    picture = Image.fromarray((grid.permute(1, 2, 0) * 255).round().byte().numpy())  # make_grid gives RGB
    labelled = Image.new(picture.mode, (picture.width + width, picture.height), "white")
    labelled.paste(picture, (width, 0))
    draw = ImageDraw.Draw(labelled)
    for row, label in enumerate(labels):
        middle = PADDING + row * row_height + (row_height - PADDING) / 2
        draw.text((width - PADDING - 2, middle), label, fill="black", anchor="rm", font=font)
    return torch.from_numpy(np.asarray(labelled).copy()).permute(2, 0, 1).float() / 255


def save_grid(
    images: torch.Tensor,
    nrow: int,
    path: Path | BinaryIO,
    row_labels: list[str] | None = None,
    min_size: int = 1,
) -> torch.Tensor:
    """Tile images in [0, 1] into one picture (white 2-px gaps; images enlarged to at least `min_size` pixels, e.g.
    MIN_IMAGE_SIZE for pictures people look at; a label left of each row when `row_labels` name them), write it as a
    PNG (to a file or a binary stream) and return it for the loggers.

    One layout for the pictures written during training, genlab-sample's and genlab-serve's.
    """
    images = upscale(images.float().cpu(), min_size)
    grid = make_grid(images, nrow=nrow, padding=PADDING, pad_value=1.0)
    rows = math.ceil(len(images) / nrow)
    if row_labels and len(row_labels) == rows:
        grid = label_rows(grid, row_labels, images.shape[-2] + PADDING)
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
