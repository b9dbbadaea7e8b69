"""`genlab-eval run=RUN_DIR [ckpt=best|last|PATH] [overrides]`: evaluate a run's checkpoint on its validation and
test splits, print the metrics and write `eval.json` into the run folder."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from genlab.commands import run_command
from genlab.config import judged_by
from genlab.console import print_metrics
from genlab.files import writable_folder, write_bytes_atomically
from genlab.run.layout import EVAL_FILE, EVALS_DIR
from genlab.run.records import write_metrics

#: The types of genlab-eval's own settings (conf/eval.yaml).
SETTINGS = {"run": str | None, "ckpt": str}


def evaluate(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Validation and test metrics of the checkpoint, on one device, with the run's data and evaluation settings.

    Every evaluation is kept: `RUN/evals/<time>_<checkpoint>.json`, and `RUN/eval.json` is the latest of them.
    """
    import pytorch_lightning as pl

    from genlab.building import build
    from genlab.checks import evaluated_splits
    from genlab.run.loading import load_run
    from genlab.training import metric_callbacks, summaries_of

    run = load_run(cfg.run, cfg.ckpt, overrides=overrides)
    evaluated_at = datetime.now(timezone.utc)
    record = run.dir / EVALS_DIR / f"{evaluated_at:%Y-%m-%d_%H-%M-%S}_{run.checkpoint.stem}.json"
    writable_folder(record.parent)
    pl.seed_everything(run.config.seed, verbose=False)
    callbacks = metric_callbacks(run.config)
    trainer: pl.Trainer = build(
        "trainer",
        run.config.trainer,
        devices=1,
        num_nodes=1,
        strategy="auto",
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
    )
    splits = evaluated_splits(run.config)
    metrics: dict[str, Any] = {}
    if "val" in splits:
        metrics.update(*trainer.validate(run.model, datamodule=run.datamodule, verbose=False))
    if "test" in splits:
        metrics.update(*trainer.test(run.model, datamodule=run.datamodule, verbose=False))
    judged_metric, judged_mode = judged_by(run.config)
    record = unique(record)
    write_metrics(
        record.parent,
        metrics,
        judged_metric,
        judged_mode,
        file_name=record.name,
        checkpoint=os.path.relpath(run.checkpoint, run.dir),
        epoch=run.epoch,
        global_step=run.global_step,
        overrides=overrides,
        evaluated_at=evaluated_at.isoformat(timespec="seconds"),
        **summaries_of(callbacks),
    )
    write_bytes_atomically(run.dir / EVAL_FILE, record.read_bytes())
    title = f"metrics of {os.path.relpath(run.checkpoint, run.dir)} (written to {os.path.relpath(record, run.dir)})"
    print_metrics(metrics, judged_metric, run.dir, title=title)
    return metrics


def unique(path: Path) -> Path:
    """`path`, or `path` with a number added when an evaluation of the same second is already there."""
    candidate, number = path, 1
    while candidate.exists():
        candidate, number = path.with_name(f"{path.stem}_{number}{path.suffix}"), number + 1
    return candidate


def main() -> None:
    """The `genlab-eval` console script."""
    run_command("genlab-eval", "eval", SETTINGS, evaluate)


if __name__ == "__main__":
    main()
