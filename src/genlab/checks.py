"""The checks of a runnable train config, made before any data is read or anything is built: light (no torch, no
Lightning), so `resume=`, genlab-eval and training share them and the checks before Hydra starts stay fast."""

from __future__ import annotations

from omegaconf import DictConfig

from genlab.config import judged_by
from genlab.errors import ConfigError, check
from genlab.validation import validate_train_config

#: Arguments genlab passes itself, per config node: the data's spec to the model, the sizes the model gives its net.
INJECTED = {"model": ("spec",), "model.net": ("shape", "latent_dim", "vocab_size", "block_size", "num_classes")}


def check_config(cfg: DictConfig) -> None:
    """Every setting of the run, checked before any data is read or anything is built (`genlab.validation`)."""
    validate_train_config(cfg, INJECTED)
    check_judged_metric_is_measured(cfg)
    check_steps_per_execution(cfg)


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
    every = cfg.metrics.get("every_n_epochs")
    check(
        every in (None, 1),
        f"checkpoints select by {judged}, so it is needed every validation epoch; "
        f"remove metrics.every_n_epochs={every}",
    )


def check_steps_per_execution(cfg: DictConfig) -> None:
    """What several optimizer steps per Lightning step (genlab.models.executions) cannot go with."""
    steps = cfg.get("steps_per_execution", 1)
    if steps == 1:
        return
    check(
        not (cfg.get("privacy") and "_target_" in cfg.privacy),
        f"steps_per_execution={steps} cannot go with privacy=dp (Opacus clips and noises each Lightning step's "
        f"gradients); set steps_per_execution=1",
    )
    for name, entry in (cfg.get("callbacks") or {}).items():
        every = entry.get("every_n_train_steps") if entry is not None else None
        check(
            not every,
            f"callbacks.{name}.every_n_train_steps={every} counts Lightning steps, which make {steps} optimizer "
            f"steps each with steps_per_execution={steps}; use every_n_epochs, or steps_per_execution=1",
        )


def evaluated_splits(cfg: DictConfig) -> list[str]:
    """The splits the run evaluates at the end: `trainer.limit_val_batches=0`, `limit_test_batches=0` and
    `test=false` turn one off, and the run still completes (metrics.json says which were not evaluated)."""
    splits = ["val"] if cfg.trainer.get("limit_val_batches") != 0 else []
    if cfg.test and cfg.trainer.get("limit_test_batches") != 0:
        splits.append("test")
    return splits


def check_validation_is_on_for(cfg: DictConfig) -> None:
    """Early stopping watches a validation metric: without validation it would stop the run with an error."""
    if "val" in evaluated_splits(cfg):
        return
    for name, entry in (cfg.get("callbacks") or {}).items():
        if entry is not None and str(entry.get("_target_", "")).endswith("EarlyStopping"):
            raise ConfigError(
                f"callbacks.{name} stops on {entry.get('monitor')}, which trainer.limit_val_batches=0 never "
                f"computes; drop it (callbacks=default) or keep validation on"
            )
