"""Checkpoint files: written atomically, checked and read back safely (plain data only, never arbitrary objects)."""

from __future__ import annotations

import pickle
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO

from genlab.errors import NON_FINITE_ADVICE, ConfigError, NumericalError, check
from genlab.files import atomic_write
from genlab.run.checkpoints import check_checkpoint_file

#: What genlab adds to a Lightning checkpoint: the data's spec (a run samples without its data) and the model's class.
SPEC_KEY = "genlab_data_spec"
MODEL_KEY = "genlab_model"


def model_class_name(model: torch.nn.Module) -> str:
    """The model's class as the config's `model._target_` names it."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


def check_finite_weights(checkpoint: dict[str, Any], path: Path) -> None:
    """Refuse to save weights that hold NaN or infinity: the checkpoint before them stays the last good one."""
    state = checkpoint.get("state_dict", {})
    weights = {name: t for name, t in state.items() if torch.is_tensor(t) and t.is_floating_point()}
    if not weights:
        return
    finite = torch.stack([torch.isfinite(t).all().to("cpu", non_blocking=True) for t in weights.values()])
    if bool(finite.all()):  # one wait for the device, however many tensors
        return
    name = next(name for name, ok in zip(weights, finite.tolist(), strict=True) if not ok)
    raise NumericalError(
        f"the weights became non-finite ({name}) by step {checkpoint.get('global_step')}, so {path.name} was not "
        f"written; {NON_FINITE_ADVICE}; the checkpoints saved before are kept"
    )


class RunCheckpointIO(TorchCheckpointIO):
    """How Lightning writes and reads a run's checkpoints: written to a temporary file and renamed into place (a crash
    or a kill while saving leaves the previous `last.ckpt` whole, never half a file), and read with
    `weights_only=True` (tensors and plain data; no code runs) whatever the torch version, also when Lightning loads
    them itself (`resume=`, `ckpt_path=`, evaluating the best checkpoint)."""

    def __init__(self, keep: Sequence[Path] = ()) -> None:
        super().__init__()
        #: Checkpoints Lightning may not delete yet (see `genlab.training.kept_checkpoint`).
        self.kept = {Path(path).resolve() for path in keep}
        self.superseded: set[Path] = set()

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        check_finite_weights(checkpoint, Path(path))
        with atomic_write(Path(path)) as partial:
            super().save_checkpoint(checkpoint, partial, storage_options)

    def remove_checkpoint(self, path: Any) -> None:
        if Path(path).resolve() in self.kept:
            self.superseded.add(Path(path).resolve())  # Lightning's best-k bookkeeping moved on; the file stays
            return
        super().remove_checkpoint(path)

    def release_kept(self, still_used: Sequence[Path] = ()) -> None:
        """Delete the kept checkpoints Lightning wanted gone, now that nothing names them any more."""
        for path in self.superseded - {Path(p).resolve() for p in still_used}:
            path.unlink(missing_ok=True)
        self.kept.clear()
        self.superseded.clear()

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(Path(path), name="ckpt_path", map_location=map_location)


def _reason(exc: BaseException) -> str:
    """The informative line of torch.load's (long, multi-line) error."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    found = next((line for line in lines if "Unsupported global" in line), lines[0] if lines else type(exc).__name__)
    return found.removeprefix("WeightsUnpickler error: ").split(" was not an allowed global")[0]


def read_checkpoint(path: Path, name: str = "ckpt", map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint's contents, loaded with `weights_only=True`: tensors and plain Python data, no code runs."""
    check_checkpoint_file(path, name)
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise ConfigError(
            f"{name}={path} could not be read as plain data ({_reason(exc)}); genlab loads checkpoints with "
            f"weights_only=True and runs no code from them: give a checkpoint written by genlab-train"
        ) from exc
    check(
        isinstance(checkpoint, dict) and "state_dict" in checkpoint,
        f"{name}={path} is not a Lightning checkpoint (no state_dict); use a .ckpt from the run's checkpoints/ folder",
    )
    return checkpoint
