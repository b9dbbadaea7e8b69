"""Loading a run folder back as a model ready to sample (`genlab.load_run`), and the data's spec its checkpoints
carry for that. The folder's files themselves are the other `genlab.run` modules'."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from genlab.building import build, building
from genlab.checks import INJECTED
from genlab.data.spec import DataSpec
from genlab.data.tokenizers import tokenizer_from_state
from genlab.errors import ConfigError, check
from genlab.run.checkpoint_io import MODEL_KEY, SPEC_KEY, read_checkpoint
from genlab.run.checkpoints import find_checkpoint
from genlab.run.config import apply_overrides, run_config
from genlab.run.layout import CHECKPOINTS, MANIFEST_FILE, METRICS_FILE, check_run_dir
from genlab.run.records import read_json
from genlab.validation import validate_train_config


def spec_state(spec: DataSpec) -> dict[str, Any]:
    """The data spec as plain data (the tokenizer as its saved state), for checkpoints loaded with weights_only."""
    state = {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "tokenizer"}
    state["tokenizer"] = spec.tokenizer.state() if spec.tokenizer is not None else None
    return state


def spec_from_state(state: Mapping[str, Any]) -> DataSpec:
    """The data spec saved by `spec_state`, its tokenizer rebuilt."""
    values = dict(state)
    tokenizer = values.pop("tokenizer", None)
    values.update(shape=tuple(values["shape"]), value_range=tuple(values["value_range"]))
    return DataSpec(**values, tokenizer=tokenizer_from_state(tokenizer) if tokenizer else None)


@dataclass
class LoadedRun:
    """A run folder loaded back: its config, metrics, manifest and model (in eval mode, ready to sample).

    `datamodule` is built on first use from the run's data config (the data must be at hand then); sampling
    needs only the checkpoint, which carries the data's spec (and a language model's tokenizer).
    """

    dir: Path
    config: DictConfig
    metrics: dict[str, Any] | None
    manifest: dict[str, Any] | None
    checkpoint: Path
    model: pl.LightningModule
    epoch: int | None = None
    global_step: int | None = None
    _datamodule: pl.LightningDataModule | None = field(default=None, repr=False)

    @property
    def datamodule(self) -> pl.LightningDataModule:
        if self._datamodule is None:
            self._datamodule = build("data", self.config.data)
        return self._datamodule


def build_model(cfg: DictConfig, spec: DataSpec) -> pl.LightningModule:
    """The model from the config; the data's spec is passed after instantiation (Hydra would turn it into config)."""
    with building("model", cfg.model):
        return build("model", cfg.model, _partial_=True)(spec=spec)


def check_device(device: str | torch.device) -> torch.device:
    """`device` as a torch device that this machine has, or one line saying what is there instead."""
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device} is not a device name; use cpu, cuda, cuda:1 or mps") from exc
    if found.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        check(count > 0, f"device={device}: no CUDA GPU is visible on this machine; use device=cpu")
        check((found.index or 0) < count, f"device={device}: this machine has {count} CUDA GPU(s), cuda:0..{count - 1}")
    elif found.type == "mps":
        check(torch.backends.mps.is_available(), f"device={device}: MPS is not available here; use device=cpu")
    elif found.type != "cpu":
        check(False, f"device={device} is not supported; use cpu, cuda or mps")
    return found


def check_finished(run_dir: Path, ckpt: str) -> None:
    """A run that failed or was interrupted is one line saying so, with its error, before its config is read again
    (a config error would otherwise be repeated as if it were this command's). An interrupted run's last checkpoint
    stays loadable with ckpt=last; a failed run without checkpoints has nothing to load."""
    manifest = read_json(run_dir / MANIFEST_FILE) or {}
    status, error = manifest.get("status"), manifest.get("error")
    if status not in ("failed", "interrupted"):
        return
    checkpoints = any((run_dir / CHECKPOINTS).glob("*.ckpt"))
    if ckpt != "best" and checkpoints:
        return
    said = f"run={run_dir} {status}" + (f" ({error})" if error else "")
    if not checkpoints:
        raise ConfigError(f"{said} before writing a checkpoint: nothing to load; start a new run")
    raise ConfigError(f"{said}: no best was evaluated; continue it (genlab-train resume={run_dir}) or give ckpt=last")


def load_run(
    run_dir: str | Path, ckpt: str = "best", device: str | torch.device = "cpu", overrides: Sequence[str] = ()
) -> LoadedRun:
    """Load a run folder: `genlab.load_run("outputs/train/runs/...")`, then `run.model.sample(16)`.

    `ckpt` is `best`, `last` or a checkpoint path; `overrides` change settings of the run's config (e.g.
    `model.eval_iwae_k=1000`) before the model is built. The checkpoint is read with `weights_only=True`.
    """
    run_dir = check_run_dir(run_dir)
    check_finished(run_dir, ckpt)
    cfg = run_config(run_dir)
    apply_overrides(cfg, overrides)
    validate_train_config(cfg, INJECTED)  # the changed settings too, before anything is built
    device = check_device(device)
    path = find_checkpoint(run_dir, cfg, ckpt)
    checkpoint = read_checkpoint(path)
    written_by = checkpoint.get(MODEL_KEY, cfg.model._target_)
    check(
        written_by == cfg.model._target_,
        f"ckpt={path} holds a {written_by}, but this run's model is a {cfg.model._target_}; "
        f"give a checkpoint of this run (ckpt=best, ckpt=last)",
    )
    datamodule = None if SPEC_KEY in checkpoint else build("data", cfg.data)  # runs saved before specs were kept
    model = build_model(cfg, spec_from_state(checkpoint[SPEC_KEY]) if datamodule is None else datamodule.spec)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise ConfigError(
            f"ckpt={path} does not fit this run's model ({cfg.model._target_}): {first[:300]}; "
            f"was it written by another run?"
        ) from exc
    model.on_load_checkpoint(checkpoint)
    model.to(device).eval()
    metrics, manifest = read_json(run_dir / METRICS_FILE), read_json(run_dir / MANIFEST_FILE)
    return LoadedRun(
        run_dir, cfg, metrics, manifest, path, model, checkpoint.get("epoch"), checkpoint.get("global_step"), datamodule
    )
