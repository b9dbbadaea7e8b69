"""A sweep job whose process died without a word (SIGKILL, the kernel's out-of-memory killer, a lost node): genlab's
launchers turn it into a failed job of the sweep, recorded in its run folder's manifest, and the sweep goes on.

Such a job returns nothing to its launcher, so the launcher builds the job's Hydra config again (as the job did) to
find its folder, and hands the sweeper what genlab's jobs return when they fail: the judged metric's worst value.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from genlab.files import write_json_atomically
from genlab.run.layout import MANIFEST_FILE
from genlab.run.records import read_json
from genlab.sweeps import job_record, worst_value

#: Statuses a job records itself: a job that died after recording one of them has said how it ended.
ENDED = ("completed", "failed", "interrupted", "pruned")


def job_config(hydra_context: Any, config: DictConfig, overrides: Sequence[str], job_num: int) -> DictConfig:
    """One job's whole config, as a launcher hands it to Hydra's `run_job`."""
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{job_num}"
        sweep_config.hydra.job.num = job_num
    return sweep_config


def record_death(job_dir: Path, overrides: Sequence[str], cause: str) -> None:
    """The job's manifest says it failed and why, unless the job recorded its end before it died."""
    manifest = read_json(job_dir / MANIFEST_FILE) or {"overrides": list(overrides), "started_at": None}
    if manifest.get("status") in ENDED:
        return
    ended = datetime.now(timezone.utc).isoformat(timespec="seconds")
    manifest.update(status="failed", error=cause, ended_at=ended)
    if manifest.get("resumes"):
        manifest["resumes"][-1].update(status="failed", error=cause, ended_at=ended)
    job_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(job_dir / MANIFEST_FILE, manifest)


def rebuilt_job_return(hydra_context: Any, config: DictConfig, overrides: Sequence[str], job_num: int,
                       status: JobStatus, value: Any) -> JobReturn:  # fmt: skip
    """A job's JobReturn made in the sweep's process, from its config and its outcome (a JobReturn holds Hydra's
    structured config classes, which only cloudpickle carries across processes)."""
    sweep_config = job_config(hydra_context, config, overrides, job_num)
    before = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(sweep_config)  # the folder's interpolations read the job's Hydra config
    try:
        job_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
    finally:
        HydraConfig.instance().cfg = before
    with read_write(sweep_config.hydra.runtime), open_dict(sweep_config.hydra.runtime):
        sweep_config.hydra.runtime.output_dir = str(job_dir.resolve())
    task_config = OmegaConf.masked_copy(sweep_config, [key for key in sweep_config if key != "hydra"])
    job_return = JobReturn(
        overrides=list(overrides),
        cfg=task_config,
        hydra_cfg=OmegaConf.masked_copy(sweep_config, ["hydra"]),
        working_dir=os.getcwd(),
        task_name=str(sweep_config.hydra.job.name),
        status=status,
    )
    job_return.return_value = value
    return job_return


def job_that_died(hydra_context: Any, config: DictConfig, overrides: Sequence[str], job_num: int,
                  cause: str) -> JobReturn:  # fmt: skip
    """The JobReturn of a job that died: its folder's manifest marked failed with `cause` and the judged metric's
    worst value returned, unless the job had recorded its end (then what it recorded stands)."""
    job_return = rebuilt_job_return(hydra_context, config, overrides, job_num, JobStatus.COMPLETED, None)
    job_dir = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
    record_death(job_dir, overrides, cause)
    record = job_record(job_dir)
    if record["status"] == "completed" and record["value"] is not None:
        job_return.return_value = record["value"]
    else:
        print(f"genlab-train: job {job_num} failed ({job_dir}): {cause}", file=sys.stderr)
        job_return.return_value = worst_value(job_return.cfg)
    return job_return
