"""The run folder, the unit users hold: its files, its final metrics, and loading it back (config, model)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.checkpoints import read_checkpoint
from genlab.data.spec import DataSpec
from genlab.data.tokenizers import tokenizer_from_state
from genlab.errors import ConfigError, check

METRICS_FILE = "metrics.json"


def _plain(value: Any) -> Any:
    """A JSON-ready number: tensors to floats, NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    """Write to a temporary file, then rename: a crash never leaves half a file where a good one was."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    os.replace(partial, path)


def write_metrics(
    run_dir: Path,
    metrics: Mapping[str, Any],
    judged_metric: str,
    judged_mode: str,
    file_name: str = METRICS_FILE,
    **extra: Any,
) -> Path:
    """metrics.json (or genlab-eval's eval.json): a flat object of metrics plus the name and direction of the
    judged metric."""
    content = {name: _plain(value) for name, value in sorted(metrics.items())}
    content.update(judged_metric=judged_metric, judged_mode=judged_mode, **{k: _plain(v) for k, v in extra.items()})
    path = run_dir / file_name
    write_json_atomically(path, content)
    return path


# -- reading a run folder back ------------------------------------------------------------------------------------

CONFIG_FILE = Path(".hydra") / "config.yaml"
MANIFEST_FILE = "manifest.json"
SPEC_KEY = "genlab_data_spec"
MODEL_KEY = "genlab_model"


def check_run_dir(path: str | Path, name: str = "run") -> Path:
    """The run folder as an absolute path, or one line saying why `path` is not one."""
    run_dir = Path(path).expanduser()
    if not (run_dir / CONFIG_FILE).is_file():
        reason = "does not exist" if not run_dir.exists() else f"has no {CONFIG_FILE}"
        raise ConfigError(
            f"{name}={path} is not a run folder ({reason}); give a folder made by genlab-train, "
            f"e.g. outputs/train/runs/<date>_<time>_<id>"
        )
    return run_dir.resolve()


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run folder, or None when the run has not written it (yet)."""
    return json.loads(path.read_text()) if path.is_file() else None


def run_config(run_dir: Path) -> DictConfig:
    """The run's own saved config, its output folder pointed at `run_dir` (it was Hydra's runtime folder)."""
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    if "paths" in cfg:
        cfg.paths.output_dir = str(run_dir)
    return cfg


_ABSENT = object()


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Apply `key=value` overrides (Hydra's syntax) to a saved config; a key it does not have is an error."""
    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc
    for override in parsed:
        key = override.key_or_group
        check(
            override.is_add() or OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT,
            f"{key} is not a setting of this run's config (see {CONFIG_FILE} in the run folder)",
        )
        check(not override.is_delete(), f"~{key}: settings of a run cannot be deleted, only changed")
        OmegaConf.update(cfg, key, override.value(), merge=False, force_add=override.is_add())


def checkpoint_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """Where the run's ModelCheckpoint wrote (callbacks.model_checkpoint.dirpath, `checkpoints/` by default)."""
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(dirpath) if dirpath else run_dir / "checkpoints"


def find_checkpoint(run_dir: Path, cfg: DictConfig, which: str) -> Path:
    """`best` (the one metrics.json describes; before the run wrote it, the newest best*.ckpt), `last`, or a path
    (relative to the working directory or to the run folder)."""
    folder = checkpoint_dir(cfg, run_dir)
    if which == "last":
        path = folder / "last.ckpt"
        check(path.is_file(), f"ckpt=last: {path} does not exist; the run saved no checkpoint yet")
        return path
    if which == "best":
        described = (read_json(run_dir / METRICS_FILE) or {}).get("checkpoint")
        if described:
            return run_dir / described
        best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        check(bool(best), f"ckpt=best: no best checkpoint in {folder}; try ckpt=last or ckpt=PATH")
        return best[-1]
    path = Path(which).expanduser()
    return path if path.is_absolute() or path.exists() else run_dir / path


def model_class_name(model: pl.LightningModule) -> str:
    """The model's class as the config's `model._target_` names it."""
    return f"{type(model).__module__}.{type(model).__qualname__}"


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
class Run:
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
            self._datamodule = instantiate(self.config.data)
        return self._datamodule


def build_model(cfg: DictConfig, spec: DataSpec) -> pl.LightningModule:
    """The model from the config; the data's spec is passed after instantiation (Hydra would turn it into config)."""
    return instantiate(cfg.model, _partial_=True)(spec=spec)


def load_run(
    run_dir: str | Path, ckpt: str = "best", device: str | torch.device = "cpu", overrides: Sequence[str] = ()
) -> Run:
    """Load a run folder: `genlab.load_run("outputs/train/runs/...")`, then `run.model.sample(16)`.

    `ckpt` is `best`, `last` or a checkpoint path; `overrides` change settings of the run's config (e.g.
    `model.eval_iwae_k=1000`) before the model is built. The checkpoint is read with `weights_only=True`.
    """
    run_dir = check_run_dir(run_dir)
    cfg = run_config(run_dir)
    apply_overrides(cfg, overrides)
    path = find_checkpoint(run_dir, cfg, ckpt)
    checkpoint = read_checkpoint(path)
    written_by = checkpoint.get(MODEL_KEY, cfg.model._target_)
    check(
        written_by == cfg.model._target_,
        f"ckpt={path} holds a {written_by}, but this run's model is a {cfg.model._target_}; "
        f"give a checkpoint of this run (ckpt=best, ckpt=last)",
    )
    datamodule = None if SPEC_KEY in checkpoint else instantiate(cfg.data)  # runs saved before specs were kept
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
    return Run(
        run_dir, cfg, metrics, manifest, path, model, checkpoint.get("epoch"), checkpoint.get("global_step"), datamodule
    )
