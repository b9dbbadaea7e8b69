"""Pruning from inside a run: the judged metric goes to the run's Optuna trial after each validation, and the run
stops as `pruned` when the sweeper's pruner says so. The trial is named by the run's config (`optuna.*`, set by the
sweeper for each job) and the pruner by the job's Hydra config, so this works under every launcher, on any machine
that reaches the study's storage."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate

from genlab.errors import Pruned
from genlab.upstream import optuna_trial


class OptunaPruning(pl.Callback):
    """Reports `monitor` at every validation (its step: the global step) and stops a run its pruner prunes."""

    def __init__(self, storage: str, study: str, trial: int, monitor: str, pruner: Any) -> None:
        import optuna

        # Optuna's storage keeps no pruner: the study is loaded with the sweeper's.
        self.trial = optuna_trial(optuna.load_study(study_name=study, storage=storage, pruner=pruner), trial)
        self.monitor = monitor

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if not math.isfinite(value):
            return
        self.trial.report(value, step=trainer.global_step)
        if self.trial.should_prune():
            raise Pruned(f"pruned by the study's pruner at step {trainer.global_step} ({self.monitor} = {value:.4g})")


def pruning_callbacks(cfg: Any, monitor: str) -> list[pl.Callback]:
    """The pruning callback of a job of genlab's Optuna sweeper (none for any other run)."""
    trial = cfg.get("optuna") or {}
    if trial.get("trial") is None or (HydraConfig.initialized() and HydraConfig.get().sweeper.get("metrics")):
        return []  # not a trial, or one of a study of several objectives (which Optuna neither reports nor prunes)
    pruner = instantiate(HydraConfig.get().sweeper.pruner) if HydraConfig.initialized() else None
    return [OptunaPruning(trial.storage, trial.study, int(trial.trial), monitor, pruner)]
