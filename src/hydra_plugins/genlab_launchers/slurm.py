"""`hydra/launcher=slurm`: hydra-submitit-launcher's SLURM launcher, with a job that SLURM or the kernel killed
(SIGKILL, out of memory, a lost node) recorded as a failed job of the sweep instead of ending it (genlab.dead_jobs).

Hydra imports every module under `hydra_plugins` when it starts: the plugin's module imports submitit lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher


class SlurmLauncher(SubmititSlurmLauncher):
    """Each job of the sweep one task of a SLURM array job (conf/hydra/launcher/slurm.yaml)."""

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Any:
        from genlab.dead_jobs import job_that_died
        from genlab.upstream import submitit_results_of_dead_jobs

        def died(job: Any, error: Exception) -> list:
            overrides, _, job_num, *_ = job.submission().args
            cause = (
                f"SLURM job {job.job_id} ended {job.state} without a result (killed, out of memory, or its node "
                f"lost); its log: {job.paths.stderr}"
            )
            return [job_that_died(self.hydra_context, self.config, overrides, job_num, cause)]

        with submitit_results_of_dead_jobs(died):
            return super().launch(job_overrides, initial_job_idx)
