"""Never write a new run over an old one: Hydra's callback that refuses a used folder before Hydra writes into it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genlab.errors import check, exit_on_user_error
from genlab.run.layout import MANIFEST_FILE, STUDY_FILE, holds_a_run

#: genlab's Optuna sweeper (hydra_plugins.genlab_sweepers), which continues the study kept in its sweep folder.
OPTUNA = "genlab_sweepers.optuna_sweeper.OptunaSweeper"


def process_rank() -> int:
    """This process's rank in a job launched by hand or by Lightning (0 when it is the only one)."""
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


def requeued_by_slurm() -> bool:
    """Whether this is a SLURM job started again after preemption or `scontrol requeue` (its job id and folder are
    the same as before: the run there continues)."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "")
    return restarts.isdigit() and int(restarts) > 0


def slurm_job_id() -> str | None:
    """This SLURM job's id (a task of an array job has one of its own), or None outside SLURM."""
    return os.environ.get("SLURM_JOB_ID") or None


def requeued_into(run_dir: Path) -> bool:
    """Whether this process is the SLURM job that made the run in `run_dir`, started again after preemption or
    `scontrol requeue`: that run continues (an sbatch script's `genlab-train ... hydra.run.dir=...` as it was)."""
    if not requeued_by_slurm():
        return False
    try:
        made_by = json.loads((run_dir / MANIFEST_FILE).read_text()).get("slurm_job_id")
    except (OSError, ValueError, AttributeError):
        return False
    return made_by is not None and made_by == slurm_job_id()


class RefuseUsedFolders(Callback):
    """A new run (`hydra.run.dir=`) or sweep (`hydra.sweep.dir=`) pointed at a folder that already holds one stops
    before Hydra writes anything there: the old run stays byte for byte as it was. `resume=` continues a run in its
    own folder instead. Other ranks of a job launched by hand join the folder rank 0 made, and a SLURM job started
    again continues the run it made there."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") or process_rank() != 0 or requeued_into(Path(config.hydra.run.dir)):
            return
        self._refuse(Path(config.hydra.run.dir), "hydra.run.dir", "continue it with resume=")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = Path(config.hydra.sweep.dir)
        if config.get("resume") is True:
            return  # -m ... resume=true: the same sweep continues there (genlab.run.resume.check_sweep_resume)
        if (folder / STUDY_FILE).is_file() and str(config.hydra.sweeper.get("_target_", "")).endswith(OPTUNA):
            return  # the Optuna sweeper continues its study there, each new trial in a folder of its own
        self._refuse(folder, "hydra.sweep.dir", "compare it with genlab-compare")

    @staticmethod
    def _refuse(folder: Path, key: str, instead: str) -> None:
        # Hydra turns an exception raised by a callback into a warning and goes on: exit here instead.
        with exit_on_user_error("genlab-train"):
            check(
                not holds_a_run(folder),
                f"{key}={folder} already holds a run; a new one would overwrite it: {instead}, or pick another folder",
            )
