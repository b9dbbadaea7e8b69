"""`hydra/launcher=processes`: the Hydra side of genlab.local_processes (conf/hydra/launcher/processes.yaml).

Hydra imports every module under `hydra_plugins` when it starts, for every command: nothing heavy at the top here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ProcessLauncher(Launcher):
    """Each job in a process of its own, `n_jobs` at a time; a job that dies is recorded as failed."""

    def __init__(self, n_jobs: int) -> None:
        self.n_jobs = n_jobs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from genlab.errors import ConfigError, exit_on_user_error
        from genlab.local_processes import launch_in_processes

        assert self.config is not None
        with exit_on_user_error("genlab-train"):
            if isinstance(self.n_jobs, bool) or not isinstance(self.n_jobs, int) or self.n_jobs < 1:
                raise ConfigError(
                    f"hydra.launcher.n_jobs={self.n_jobs!r}: give the number of jobs to run at once (>= 1)"
                )
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        return launch_in_processes(
            self.hydra_context, self.config, self.task_function, job_overrides, initial_job_idx, self.n_jobs
        )
