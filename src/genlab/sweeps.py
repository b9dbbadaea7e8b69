"""Multirun support: a failed job does not end the sweep, DDP workers run their own job only, the sweep ends with a
summary of which jobs failed and why, and TensorBoard's HPARAMS tab lines up each run's overrides with its metrics."""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

from genlab.config import judged_by
from genlab.errors import Pruned, user_error_of
from genlab.files import write_json_atomically
from genlab.interrupts import SIGTERM_STATUS
from genlab.run.layout import MANIFEST_FILE, METRICS_FILE
from genlab.run.records import read_json
from genlab.upstream import ddp_workers_run_this_job, parse_hydra_overrides, tensorboard_file_writer

if TYPE_CHECKING:
    from genlab.interrupts import Signals
    from genlab.run.manifest import Manifest

log = logging.getLogger(__name__)
SUMMARY_FILE = "sweep_summary.json"


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """`key=value` overrides as {key: typed value} (`model=vae` -> {"model": "vae"}, `~key` -> {"key": None})."""
    parsed: dict[str, Any] = {}
    for override in parse_hydra_overrides(overrides):
        value = None if override.is_delete() else override.value()
        scalar = value is None or isinstance(value, (int, float, str, bool))
        parsed[override.key_or_group] = value if scalar else str(value)
    return parsed


def worst_value(cfg: DictConfig) -> float:
    """The judged metric's worst value (inf when lower is better), which a sweeper reads as a failed trial."""
    try:
        _, mode = judged_by(cfg)
    except Exception:  # the model (or metrics) class itself is what failed to load: any direction will do
        mode = "min"
    return math.inf if mode == "min" else -math.inf


def run_sweep_job(
    cfg: DictConfig, manifest: Manifest, train: Callable[[DictConfig], float | None], signals: Signals
) -> float:
    """One job of a sweep: its failure is recorded and printed, and the worst value returned instead of raised,
    so the launcher and sweeper (Optuna) go on with the other jobs. Ctrl-C or SIGTERM stops the whole sweep, after
    writing its summary (exit status 143 for SIGTERM)."""
    worst = worst_value(cfg)
    try:
        with ddp_workers_run_this_job(), manifest.track():
            value = train(cfg)
    except (KeyboardInterrupt, SystemExit):
        summarize(Path(HydraConfig.get().sweep.dir))
        if signals.terminated:
            sys.exit(SIGTERM_STATUS)
        raise
    except Pruned as exc:
        print(f"genlab-train: job {HydraConfig.get().job.num} {exc}", file=sys.stderr)
        return worst
    except Exception as exc:
        job = HydraConfig.get().job.num
        if user_error_of(exc) is None:  # a bug: keep its traceback in the job's log
            log.exception("job %s failed", job)
        print(f"genlab-train: job {job} failed ({cfg.paths.output_dir}): {manifest.content['error']}", file=sys.stderr)
        return worst
    return worst if value is None or math.isnan(value) else float(value)


def log_hparams(loggers: list[Any], metrics: Mapping[str, float]) -> None:
    """TensorBoard's HPARAMS tab: this run's overrides (what varies across a sweep) against its final metrics.

    Written as the hparams summary only: the metric values are the scalars already logged under the same names
    (the last one is the best checkpoint's), so nothing is added to the learning curves.
    """
    from pytorch_lightning.loggers import TensorBoardLogger
    from torch.utils.tensorboard.summary import hparams

    params = parse_overrides(list(HydraConfig.get().overrides.task))
    params = {key: "null" if value is None else value for key, value in params.items()}
    for logger in loggers:
        if isinstance(logger, TensorBoardLogger) and params:
            writer = tensorboard_file_writer(logger.experiment)
            for summary in hparams(params, dict(metrics)):
                writer.add_summary(summary)
            writer.flush()


def read_json_or_empty(path: Path, damaged: list[str]) -> dict[str, Any]:
    """A run folder's JSON file, or {} when it is missing, or damaged (its one line added to `damaged`)."""
    try:
        return read_json(path) or {}
    except (OSError, ValueError) as exc:
        damaged.append(str(exc))
        return {}


def job_record(job_dir: Path) -> dict[str, Any]:
    """A job's status, error line, overrides and judged metric, from its manifest and metrics.json; a job whose
    files are damaged is `unreadable`, with the line naming the file."""
    damaged: list[str] = []
    manifest = read_json_or_empty(job_dir / MANIFEST_FILE, damaged)
    metrics = read_json_or_empty(job_dir / METRICS_FILE, damaged)
    judged = metrics.get("judged_metric")
    if damaged:
        log.warning("job %s is unreadable: %s", job_dir.name, damaged[0])
    return {
        "job": job_dir.name,
        "folder": str(job_dir),
        "status": "unreadable" if damaged else manifest.get("status", "missing manifest"),
        "error": damaged[0] if damaged else manifest.get("error"),
        "overrides": manifest.get("overrides", []),
        "judged_metric": judged,
        "value": metrics.get(judged) if judged else None,
    }


def _job_order(path: Path) -> tuple[int, str]:
    return (int(path.name), "") if path.name.isdigit() else (sys.maxsize, path.name)


def summarize(sweep_dir: Path) -> list[dict[str, Any]]:
    """A table of every job of the sweep so far (status, judged metric, error line) and `sweep_summary.json`;
    returns the jobs that did not complete."""
    job_dirs = sorted((p.parent for p in sweep_dir.glob(f"*/{MANIFEST_FILE}")), key=_job_order)
    jobs = [job_record(d) for d in job_dirs]
    failed = [job for job in jobs if job["status"] not in ("completed", "pruned")]
    write_json_atomically(
        sweep_dir / SUMMARY_FILE,
        {"sweep_dir": str(sweep_dir), "jobs": len(jobs), "failed": len(failed), "runs": jobs},
    )
    shared = set.intersection(*(set(job["overrides"]) for job in jobs)) if jobs else set()
    unreadable = sum(job["status"] == "unreadable" for job in jobs)
    table = Table(title=f"sweep {sweep_dir}" + (f" ({unreadable} unreadable jobs)" if unreadable else ""))
    for column in ("job", "status", "overrides", "judged metric", "error"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        overrides = " ".join(o for o in job["overrides"] if o not in shared)  # what sets this job apart
        value = "" if job["value"] is None else f"{job['judged_metric']} = {job['value']:.4f}"
        style = None if job["status"] in ("completed", "pruned") else "red"
        table.add_row(job["job"], job["status"], overrides, value, job["error"] or "", style=style)
    console = Console(soft_wrap=True)
    console.print(table)
    pruned = sum(job["status"] == "pruned" for job in jobs)
    ended = f"{len(jobs) - len(failed) - pruned} of {len(jobs)} jobs completed" + (
        f", {pruned} pruned" if pruned else ""
    )
    console.print(f"{ended}; summary: {sweep_dir / SUMMARY_FILE}")
    console.print(f"compare them: genlab-compare {sweep_dir}")
    return failed


class SweepSummary(Callback):
    """At the end of a multirun: the summary of `summarize`, and exit status 1 if any job failed
    (`fail_on_job_error: false` to keep 0)."""

    def __init__(self, fail_on_job_error: bool = True) -> None:
        self.fail_on_job_error = fail_on_job_error

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = summarize(Path(config.hydra.sweep.dir))
        if failed and self.fail_on_job_error:
            sys.exit(1)
