"""One training job, after Hydra has composed its config: build data, model, callbacks, loggers and trainer, fit,
then evaluate the best checkpoint and write `metrics.json` into the run folder.

The deep-learning imports live here, not in the `genlab-train` entrypoint, so `--help`, `--cfg job` and
composition errors answer before torch and Lightning are loaded.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from genlab.callbacks.run_state import CheckpointOnInterrupt, LoadableCheckpoint, RandomState
from genlab.checkpoints import AtomicCheckpointIO, check_checkpoint_file
from genlab.config import judged_by
from genlab.console import print_metrics
from genlab.errors import ConfigError, check
from genlab.manifest import Manifest
from genlab.resume import resumed_config, use_one_wandb_run
from genlab.run_folder import write_metrics
from genlab.runs import build_model
from genlab.sweeps import in_multirun, log_hparams, run_sweep_job

# Data lives in memory and is batched by index: worker processes would only add start-up time.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Lightning 2.6 on torch >= 2.10 warns about its own pytree use on every run; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")


def check_settings(node: DictConfig, where: str, injected: tuple[str, ...] = ()) -> None:
    """Fail on a setting the `_target_` does not take, naming the ones it does, before anything is built.

    Hydra reports such a key itself when it builds the object; the model is built later (it needs the data's spec)
    and calls its net, so without this a misspelt `+model.x=...` would surface as a TypeError traceback.
    """
    target = get_object(node._target_)
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [key for key in node if not str(key).startswith("_") and key not in parameters]
    if unknown:
        known = ", ".join(name for name in parameters if name not in ("self", *injected))
        raise ConfigError(f"{where} has no setting {', '.join(unknown)}; {target.__name__} takes: {known}")


def check_model_settings(cfg: DictConfig) -> None:
    """The model's and its net's settings, minus what the model supplies itself (spec; the net's sizes)."""
    check_settings(cfg.model, "model", injected=("spec",))
    if isinstance(cfg.model.get("net"), DictConfig):
        check_settings(cfg.model.net, "model.net", injected=("shape", "latent_dim", "vocab_size", "block_size"))


def check_judged_metric_is_measured(cfg: DictConfig) -> None:
    """A model judged by FID (the GAN) needs the sample-quality metrics on every validation epoch: checkpoints and
    early stopping select by it."""
    judged, _ = judged_by(cfg)
    if not judged.endswith("/fid"):
        return
    enabled = bool(cfg.get("metrics")) and "_target_" in cfg.metrics
    check(
        enabled,
        f"model={cfg.model._target_.rsplit('.', 1)[-1]} is judged by {judged}, which metrics=none turns off; "
        f"keep metrics=sample_quality (make it cheaper with metrics.num_fake=...)",
    )
    every = cfg.metrics.get("every_n_epochs", 1)
    check(
        every == 1,
        f"checkpoints select by {judged}, so it is needed every validation epoch; "
        f"remove metrics.every_n_epochs={every}",
    )


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as `callbacks` or `logger`; `null` entries are skipped."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def metric_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The configured sample-quality metrics (`metrics=none` disables them), for training and genlab-eval."""
    return [instantiate(cfg.metrics)] if cfg.get("metrics") and "_target_" in cfg.metrics else []


def summaries_of(callbacks: list[pl.Callback]) -> dict[str, Any]:
    """What callbacks record beside the numbers (e.g. the sample counts behind FID), under their own keys."""
    return {k: v for c in callbacks if callable(getattr(c, "summary", None)) for k, v in c.summary().items()}


def evaluate_best(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule, test: bool
) -> tuple[dict[str, float], str]:
    """Validation (and test) metrics of the best checkpoint, so every number in metrics.json describes one model.

    Without a checkpoint (e.g. fast_dev_run) the weights in memory are evaluated.
    """
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt_path = best or None
    metrics = dict(trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    if test:
        metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    return metrics, best


def train(cfg: DictConfig) -> float | None:
    """Run one training job; returns the judged metric (for sweepers)."""
    run_dir = Path(cfg.paths.output_dir)
    check_judged_metric_is_measured(cfg)
    check_model_settings(cfg)  # before any data is read: text data reads and tokenizes its corpus for the spec
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path not in (None, "last"):
        check_checkpoint_file(Path(ckpt_path))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule.spec)
    callbacks = instantiate_each(cfg.get("callbacks")) + metric_callbacks(cfg)
    # What makes the run folder resumable and loadable, whatever the configured callbacks.
    callbacks += [RandomState(), LoadableCheckpoint(), CheckpointOnInterrupt()]
    loggers = instantiate_each(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()]
    )

    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(config)

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics, best = evaluate_best(trainer, model, datamodule, test=cfg.test)
    summaries = summaries_of(callbacks)
    judged_metric, judged_mode = judged_by(cfg)
    if trainer.is_global_zero:
        # The epoch and step of the evaluated checkpoint (validate/test restore weights, not the loop counters).
        state = torch.load(best, map_location="cpu", weights_only=True) if best else {}
        write_metrics(
            run_dir,
            metrics,
            judged_metric,
            judged_mode,
            checkpoint=os.path.relpath(best, run_dir) if best else None,
            epoch=state.get("epoch", trainer.current_epoch),
            global_step=state.get("global_step", trainer.global_step),
            **summaries,
        )
        print_metrics(metrics, judged_metric, run_dir)
        log_hparams(trainer.loggers, metrics)
    return metrics.get(judged_metric)


def run_job(cfg: DictConfig) -> float | None:
    """The Hydra task: one run, or one job of a sweep; returns the judged metric (for sweepers)."""
    overrides = list(HydraConfig.get().overrides.task)
    if cfg.get("resume"):
        cfg = resumed_config(cfg.resume, overrides)
        manifest = Manifest.resumed(Path(cfg.paths.output_dir), cfg.seed, overrides)
    else:
        manifest = Manifest(Path(cfg.paths.output_dir), cfg.seed, overrides)
    use_one_wandb_run(cfg, manifest)
    if in_multirun():  # a failed job is recorded and scored as the worst value; the sweep goes on
        return run_sweep_job(cfg, manifest, train)
    try:
        with manifest.track():
            return train(cfg)
    except SIGTERMException:  # Lightning stops gracefully on SIGTERM (after saving, see CheckpointOnInterrupt)
        sys.exit(128 + signal.SIGTERM)  # and would exit with status 0
