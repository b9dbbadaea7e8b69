"""What a run folder needs to be continued and loaded back: random states and the data spec in its checkpoints,
and a checkpoint on Ctrl-C/SIGTERM."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.utilities.exceptions import SIGTERMException

from genlab.run.checkpoint_io import MODEL_KEY, SPEC_KEY, model_class_name
from genlab.run.layout import LAST
from genlab.run.loading import spec_state


def relocate_checkpoint_state(state: dict[str, Any], old: str, new: str) -> None:
    """A ModelCheckpoint's saved state with every path under `old` moved under `new`."""

    def moved(path: Any) -> Any:
        return new + path[len(old) :] if isinstance(path, str) and path.startswith(old) else path

    state["dirpath"] = new
    for field in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if field in state:
            state[field] = moved(state[field])
    if isinstance(state.get("best_k_models"), dict):
        state["best_k_models"] = {moved(path): score for path, score in state["best_k_models"].items()}


class RandomState(pl.Callback):
    """Saves the torch, CUDA, numpy and Python random states with every checkpoint and restores them on resume.

    Weights, optimizers and loop counters come back through Lightning; without the random states, a resumed run
    would shuffle its data and draw its noise differently from one that never stopped. States are restored in
    `on_fit_start`, before the training data iterator draws its shuffling seed (Lightning's sanity check runs with
    an isolated random state in between), and are stored as tensors and plain numbers so the checkpoint still
    loads with `weights_only=True`.
    """

    def __init__(self) -> None:
        self._to_restore: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        kind, keys, position, has_gauss, cached_gaussian = np.random.get_state()
        version, python_state, gauss = random.getstate()
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), cached_gaussian],
            "python": [version, list(python_state), gauss],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._to_restore = state_dict

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._to_restore is None:
            return
        state, self._to_restore = self._to_restore, None
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(state["cuda"])
        kind, keys, position, has_gauss, cached_gaussian = state["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gaussian))
        version, python_state, gauss = state["python"]
        random.setstate((version, tuple(python_state), gauss))


class CheckpointOnInterrupt(pl.Callback):
    """On Ctrl-C or SIGTERM during training, save `last.ckpt` beside the other checkpoints, so `resume=` continues.

    Only interruptions: a run that failed (e.g. a non-finite loss) keeps its last good checkpoints untouched.
    An interruption in the middle of an epoch is saved too; Lightning then resumes with the epoch's remaining
    batches (a fresh data order), so only runs stopped between epochs continue bit for bit.
    """

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        checkpoint = trainer.checkpoint_callback
        interrupted = isinstance(exception, (KeyboardInterrupt, SIGTERMException))
        if not interrupted or trainer.state.fn != "fit" or trainer.sanity_checking or trainer.fast_dev_run:
            return
        if not isinstance(checkpoint, ModelCheckpoint) or checkpoint.dirpath is None:
            return
        trainer.save_checkpoint(Path(checkpoint.dirpath) / f"{LAST}.ckpt", weights_only=False)


def judged_checkpoint(trainer: pl.Trainer, judged_metric: str) -> ModelCheckpoint | None:
    """The checkpoint callback that keeps the best checkpoint by the model's judged metric, wherever it stands among
    the callbacks (Lightning's `trainer.checkpoint_callback` is merely the first one)."""
    return next((c for c in trainer.checkpoint_callbacks if c.monitor == judged_metric), None)


class LoadableCheckpoint(pl.Callback):
    """Keeps the model's class and the data's spec (kind, shape, vocabulary, tokenizer) in every checkpoint as plain
    data, so a run folder can be loaded and sampled without its dataset (`genlab.load_run`, `genlab-sample`), and
    a checkpoint of another kind of model is refused with a clear message.

    Loading one back (`resume=`), the checkpoint callbacks' saved paths are moved to the folder the run is in now:
    Lightning keeps them absolute, so a run folder that was moved or copied would otherwise go on from (or evaluate)
    the files of the folder it came from.
    """

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        by_key = {callback.state_key: callback for callback in trainer.checkpoint_callbacks}
        for key, state in checkpoint.get("callbacks", {}).items():
            callback = by_key.get(key)
            old, new = state.get("dirpath") if isinstance(state, dict) else None, getattr(callback, "dirpath", None)
            if old and new and old != new:
                relocate_checkpoint_state(state, str(old), str(new))

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        checkpoint[MODEL_KEY] = model_class_name(pl_module)
        spec = getattr(trainer.datamodule, "spec", None)
        if spec is not None:
            checkpoint[SPEC_KEY] = spec_state(spec)
