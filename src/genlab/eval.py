"""`genlab-eval run=RUN_DIR [ckpt=best|last|PATH] [overrides]`: evaluate a run's checkpoint on its validation and
test splits, print the metrics and write `eval.json` into the run folder."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from omegaconf import DictConfig

from genlab.commands import run_command
from genlab.config import judged_by
from genlab.console import print_metrics
from genlab.run_folder import write_metrics

EVAL_FILE = "eval.json"


def evaluate(cfg: DictConfig, overrides: list[str]) -> dict[str, Any]:
    """Validation and test metrics of the checkpoint, on one device, with the run's data and evaluation settings."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from genlab.runs import load_run
    from genlab.training import metric_callbacks, summaries_of

    run = load_run(cfg.run, cfg.ckpt, overrides=overrides)
    pl.seed_everything(run.config.seed, verbose=False)
    callbacks = metric_callbacks(run.config)
    trainer: pl.Trainer = instantiate(
        run.config.trainer,
        devices=1,
        num_nodes=1,
        strategy="auto",
        logger=False,
        callbacks=callbacks,
        enable_checkpointing=False,
    )
    metrics = dict(trainer.validate(run.model, datamodule=run.datamodule, verbose=False)[0])
    metrics.update(trainer.test(run.model, datamodule=run.datamodule, verbose=False)[0])
    judged_metric, judged_mode = judged_by(run.config)
    write_metrics(
        run.dir,
        metrics,
        judged_metric,
        judged_mode,
        file_name=EVAL_FILE,
        checkpoint=os.path.relpath(run.checkpoint, run.dir),
        epoch=run.epoch,
        global_step=run.global_step,
        overrides=overrides,
        evaluated_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **summaries_of(callbacks),
    )
    title = f"metrics of {os.path.relpath(run.checkpoint, run.dir)} (written to {EVAL_FILE})"
    print_metrics(metrics, judged_metric, run.dir, title=title)
    return metrics


def main() -> None:
    """The `genlab-eval` console script."""
    run_command("genlab-eval", "eval", evaluate)


if __name__ == "__main__":
    main()
