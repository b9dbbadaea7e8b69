"""Checkpoint files: written atomically, checked and read back safely (plain data only, never arbitrary objects)."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from genlab.errors import ConfigError, check


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file beside it, then rename it into place.

    A crash or a kill while saving leaves the previous `last.ckpt` (or best checkpoint) whole, never half a file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            super().save_checkpoint(checkpoint, partial, storage_options)
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)


def check_checkpoint_file(path: Path, name: str = "ckpt_path") -> None:
    """A missing or truncated checkpoint fails here, in one line, before any data or model is built.

    torch.save writes a zip archive whose directory sits at the end, so a cut-off file is no longer a zip.
    """
    check(path.is_file(), f"{name}={path} is not a file; give the path of a .ckpt file, or {name}=last")
    check(
        zipfile.is_zipfile(path),
        f"{name}={path} is not a readable checkpoint (truncated, or not written by torch.save); "
        f"use another .ckpt, e.g. the run's checkpoints/last.ckpt",
    )


def _reason(exc: BaseException) -> str:
    """The informative line of torch.load's (long, multi-line) error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else type(exc).__name__)
    return found.removeprefix("WeightsUnpickler error: ").split(" was not an allowed global")[0]


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's contents, loaded with `weights_only=True`: tensors and plain Python data, no code runs."""
    check_checkpoint_file(path, "ckpt")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"ckpt={path} could not be read as plain data ({_reason(exc)}); genlab loads checkpoints with "
            f"weights_only=True and runs no code from them: give a checkpoint written by genlab-train"
        ) from exc
    check(
        isinstance(checkpoint, dict) and "state_dict" in checkpoint,
        f"ckpt={path} is not a Lightning checkpoint (no state_dict); use a .ckpt from the run's checkpoints/ folder",
    )
    return checkpoint
