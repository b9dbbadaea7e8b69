"""One training job, after Hydra has composed its config: build data, model, callbacks, loggers and trainer, fit,
then evaluate the best checkpoint and write `metrics.json` into the run folder.

The deep-learning imports live here, not in the `genlab-train` entrypoint, so `--help`, `--cfg job` and
composition errors answer before torch and Lightning are loaded.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities import rank_zero_only

from genlab.building import build
from genlab.callbacks.finite_loss import anomaly_error
from genlab.callbacks.run_state import CheckpointOnInterrupt, LoadableCheckpoint, RandomState, judged_checkpoint
from genlab.checks import check_config, check_validation_is_on_for, evaluated_splits
from genlab.config import judged_by
from genlab.console import print_metrics
from genlab.data.blocks import TrainsInBlocks
from genlab.errors import ConfigError, MachineError, user_error_of
from genlab.interrupts import SIGTERM_STATUS, interrupted_by, stop_on_sigterm
from genlab.models.base import GenerativeModel
from genlab.models.executions import StepsPerExecution
from genlab.run.checkpoint_io import RunCheckpointIO, read_checkpoint
from genlab.run.checkpoints import check_checkpoint_file
from genlab.run.guard import requeued_by_slurm, requeued_into
from genlab.run.layout import CHECKPOINTS, LAST, METRICS_FILE
from genlab.run.loading import build_model
from genlab.run.lock import run_lock
from genlab.run.manifest import Manifest
from genlab.run.manifest import record as record_in_manifest
from genlab.run.records import read_json, write_metrics
from genlab.run.resume import resumed_config, use_one_wandb_run
from genlab.sweeper.pruning import pruning_callbacks
from genlab.sweeps import held_run, in_multirun, kept_job_value, log_hparams, run_sweep_job
from genlab.threads import use_threads
from genlab.upstream import plain_gpu_check_without_a_gpu

# Data lives in memory and is batched by index: worker processes would only add start-up time.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Lightning 2.6 on torch >= 2.10 warns about its own pytree use on every run; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")
# Lightning advertises its cloud logger on every Trainer; the run's log is for the run.
logging.getLogger("pytorch_lightning.utilities.rank_zero").addFilter(lambda record: "💡 Tip" not in str(record.msg))


def instantiate_each(name: str, group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of the config group `name` (`callbacks`, `logger`); `null` entries are skipped."""
    if not group:
        return []
    return [build(f"{name}.{key}", entry) for key, entry in group.items() if entry is not None and "_target_" in entry]


def chosen_callback(cfg: DictConfig, group: str) -> list[pl.Callback]:
    """The callback a group's option builds (`metrics=sample_quality`, `privacy=dp`), or none (`metrics=none`)."""
    node = cfg.get(group)
    return [build(group, node)] if node and "_target_" in node else []


def metric_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """The configured sample-quality metrics (`metrics=none` disables them), for training and genlab-eval."""
    return chosen_callback(cfg, "metrics")


#: Callbacks of the `callbacks` group that measure the trained model at test: genlab-eval runs them again.
EVALUATION_CALLBACKS = ("memorization", "inpainting")


def evaluation_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """What a run's evaluation computes beyond the model's own metrics: the metrics group and the callbacks of
    EVALUATION_CALLBACKS that the run's config has, so genlab-eval reproduces every number of metrics.json."""
    group = cfg.get("callbacks") or {}
    chosen = [name for name in EVALUATION_CALLBACKS if group.get(name) is not None and "_target_" in group[name]]
    return metric_callbacks(cfg) + [build(f"callbacks.{name}", group[name]) for name in chosen]


def privacy_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """Differentially private training (`privacy=dp`), or nothing (`privacy=none`)."""
    return chosen_callback(cfg, "privacy")


def summaries_of(callbacks: list[pl.Callback]) -> dict[str, Any]:
    """What callbacks record beside the numbers (e.g. the sample counts behind FID), under their own keys."""
    return {k: v for c in callbacks if callable(getattr(c, "summary", None)) for k, v in c.summary().items()}


def parameter_counts(model: GenerativeModel) -> dict[str, int]:
    """The parameter counts of a model that trains only some of its parameters (LoRA adapters), for metrics.json."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable_parameters": trainable} if trainable < total else {}


def evaluate_best(
    trainer: pl.Trainer, model: GenerativeModel, datamodule: pl.LightningDataModule, splits: list[str], judged: str
) -> tuple[dict[str, float], str]:
    """Metrics of the best checkpoint by the `judged` metric on `splits`, so every number in metrics.json
    describes one model. Without validation the run has no best: its last checkpoint is evaluated. Without any
    checkpoint (fast_dev_run) the weights in memory are."""
    best = judged_checkpoint(trainer, judged)
    path = best.best_model_path if best is not None else ""
    if not path and trainer.checkpoint_callback is not None:
        last = Path(str(trainer.checkpoint_callback.dirpath)) / f"{LAST}.ckpt"
        path = str(last) if last.is_file() else ""
    ckpt_path = path or None
    metrics: dict[str, float] = {}
    if "val" in splits:
        metrics.update(*trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False))
    if "test" in splits:
        metrics.update(*trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False))
    return metrics, path


def kept_checkpoint(cfg: DictConfig, run_dir: Path) -> Path | None:
    """Resuming a run that completed: the checkpoint its metrics.json describes is kept until the resume has
    completed too, so a resume that fails or is interrupted leaves metrics.json naming a file that exists."""
    if not cfg.get("resume"):
        return None
    described = (read_json(run_dir / METRICS_FILE) or {}).get("checkpoint")
    return (run_dir / described).resolve() if described else None


@contextmanager
def faults_explained(trainer: pl.Trainer, run_dir: Path) -> Iterator[None]:
    """What `trainer.detect_anomaly=true` finds as one line with its step; a full or read-only disk's line says how
    the run goes on once that is fixed (its last good `last.ckpt` is whole: checkpoints are written atomically)."""
    try:
        yield
    except Exception as exc:
        if (anomaly := anomaly_error(exc, trainer.global_step)) is not None:
            raise anomaly from exc
        error = user_error_of(exc)
        last = run_dir / CHECKPOINTS / f"{LAST}.ckpt"
        if isinstance(error, MachineError) and "memory" not in str(error) and last.is_file():
            raise MachineError(f"{error}; then go on from {last.name}: genlab-train resume={run_dir}") from exc
        raise


#: What the Trainer must leave to the model under manual optimization: clipping and accumulation (they move into
#: the StepsPerExecution, which does them as the Trainer would).
MANUAL_OPTIMIZATION_TRAINER = {"gradient_clip_val": None, "gradient_clip_algorithm": None, "accumulate_grad_batches": 1}


def steps_per_execution(cfg: DictConfig) -> StepsPerExecution | None:
    """`steps_per_execution=K` (K > 1) as what the model's Lightning steps do; None for Lightning's own one step."""
    steps = cfg.get("steps_per_execution", 1)
    if steps == 1:
        return None
    return StepsPerExecution(
        steps=steps,
        batch_size=cfg.data.batch_size,
        accumulate=cfg.trainer.get("accumulate_grad_batches") or 1,
        clip_val=cfg.trainer.get("gradient_clip_val") or None,
        clip_algorithm=cfg.trainer.get("gradient_clip_algorithm"),
    )


def execute_steps(execution: StepsPerExecution, model: pl.LightningModule, datamodule: Any) -> None:
    """Have the training loader hand out, and the model step through, `execution.steps` batches at a time."""
    if not isinstance(datamodule, TrainsInBlocks) or not isinstance(model, GenerativeModel):
        raise ConfigError(
            f"steps_per_execution={execution.steps} needs one of genlab's datamodules and models; "
            f"{type(datamodule).__name__} and {type(model).__name__} are not: set steps_per_execution=1"
        )
    model.execute_steps(execution)
    datamodule.steps_per_execution = execution.steps * execution.accumulate


def train(cfg: DictConfig) -> float | None:
    """Run one training job; returns the judged metric (for sweepers)."""
    run_dir = Path(cfg.paths.output_dir)
    check_config(cfg)  # before any data is read: text data reads and tokenizes its corpus for the spec
    check_validation_is_on_for(cfg)
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path not in (None, "last"):
        check_checkpoint_file(Path(ckpt_path))
    use_threads(cfg.get("threads"))
    plain_gpu_check_without_a_gpu()
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = build("data", cfg.data)
    # Privacy first: its refusals come before any metric's set-up, and its optimizer before any callback uses it.
    callbacks = privacy_callbacks(cfg) + instantiate_each("callbacks", cfg.get("callbacks")) + metric_callbacks(cfg)
    # What makes the run folder resumable and loadable, whatever the configured callbacks.
    callbacks += [RandomState(), LoadableCheckpoint(), CheckpointOnInterrupt()]
    callbacks += pruning_callbacks(cfg, judged_by(cfg)[0])
    loggers = instantiate_each("logger", cfg.get("logger"))
    kept = kept_checkpoint(cfg, run_dir)
    checkpoint_io = RunCheckpointIO(keep=[kept] if kept else [])
    execution = steps_per_execution(cfg)
    # The Trainer checks its own settings: before the data is read (text data is read for the model's spec).
    trainer: pl.Trainer = build(
        "trainer",
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[checkpoint_io],
        **({} if execution is None else MANUAL_OPTIMIZATION_TRAINER),
    )
    model = build_model(cfg, datamodule.spec)
    if execution is not None:
        execute_steps(execution, model, datamodule)

    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(config)

    with faults_explained(trainer, run_dir):
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    splits = evaluated_splits(cfg)
    judged_metric, judged_mode = judged_by(cfg)
    metrics, best = evaluate_best(trainer, model, datamodule, splits, judged_metric)
    summaries = summaries_of(callbacks)
    if trainer.is_global_zero:
        # The epoch and step of the evaluated checkpoint (validate/test restore weights, not the loop counters).
        state = read_checkpoint(Path(best), "ckpt_path") if best else {}
        not_evaluated = [split for split in ("val", "test") if split not in splits]
        write_metrics(
            run_dir,
            metrics,
            judged_metric,
            judged_mode,
            checkpoint=os.path.relpath(best, run_dir) if best else None,
            epoch=state.get("epoch", trainer.current_epoch),
            global_step=state.get("global_step", trainer.global_step),
            **({"not_evaluated": not_evaluated} if not_evaluated else {}),
            **parameter_counts(model),
            **summaries,
        )
        if "privacy" in summaries:  # what a DP run spent belongs to the run's identity card too
            record_in_manifest(run_dir, privacy=summaries["privacy"])
        checkpoint_io.release_kept(still_used=[Path(best).resolve()] if best else [])
        # debug=fdr and checkpointing=false keep no checkpoint: the numbers are of the weights training ended with.
        kept = "the best checkpoint" if best else "the last weights (no checkpoint was kept)"
        print_metrics(metrics, judged_metric, run_dir, title=f"final metrics of {kept}")
        log_hparams(trainer.loggers, metrics)
    return metrics.get(judged_metric)


def run_job(cfg: DictConfig) -> float | None:
    """The Hydra task: one run, or one job of a sweep; returns the judged metric (for sweepers).

    The run folder is locked for the job (one writer at a time); SIGTERM anywhere in it ends the run as interrupted,
    with exit status 143.
    """
    overrides = list(HydraConfig.get().overrides.task)
    run_dir = Path(cfg.paths.output_dir)
    # -m ... resume=true, or a sweep's job or a run that SLURM started again: the folder may hold its run already
    continued = cfg.get("resume") is True or (in_multirun() and requeued_by_slurm()) or requeued_into(run_dir)
    if continued and held_run(run_dir) == "completed":
        return kept_job_value(run_dir)  # only read: not even its lock file is touched
    with stop_on_sigterm() as signals, writing(run_dir):
        if continued:
            cfg.resume = str(run_dir) if held_run(run_dir) == "resumable" else None
        if cfg.get("resume"):
            # A job of a continued sweep resumes with its saved config as it is: that is the job's config.
            cfg = resumed_config(cfg.resume, [] if continued else overrides)
            manifest = Manifest.resumed(Path(cfg.paths.output_dir), cfg.seed, overrides)
            if requeued_by_slurm():  # preempted or requeued: the same SLURM job, started again
                manifest.content["resumes"][-1]["slurm_restart_count"] = int(os.environ["SLURM_RESTART_COUNT"])
        else:
            manifest = Manifest(Path(cfg.paths.output_dir), cfg.seed, overrides)
        use_one_wandb_run(cfg, manifest)
        if in_multirun():  # a failed job is recorded and scored as the worst value; the sweep goes on
            return run_sweep_job(cfg, manifest, train, signals)
        try:
            with manifest.track():
                return train(cfg)
        except BaseException as exc:
            # Lightning ends a fit stopped by SIGTERM with status 0, by Ctrl-C with 1; a signal that landed inside a
            # library's clean-up may surface as that library's error
            if signals.terminated and interrupted_by(exc):
                sys.exit(SIGTERM_STATUS)
            raise


def writing(run_dir: Path) -> AbstractContextManager[None]:
    """The run folder's lock, held by the main process only (DDP workers and ranks write through rank 0)."""
    return run_lock(run_dir) if rank_zero_only.rank == 0 else nullcontext()
