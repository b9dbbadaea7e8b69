"""A sweep job killed by the OS (SIGKILL, as the out-of-memory killer sends) under hydra/launcher=processes: that job
is recorded as failed in its manifest and the sweep summary, and the sweep's other jobs run to the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import train_env
from inprocess import console_script
from test_sweeps import TINY_VAE

#: Job 0 trains long enough to be killed while it trains; job 1 ends at once.
TWO_JOBS = ["hydra/launcher=processes", "hydra.launcher.n_jobs=2", "trainer.max_epochs=100,1"]


def children(pid: int) -> list[int]:
    found = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(child) for child in found]


def wait_for(ready, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.2)


def status(job_dir: Path) -> str | None:
    try:
        return json.loads((job_dir / "manifest.json").read_text())["status"]
    except (OSError, ValueError):
        return None


def test_a_job_killed_by_the_os_is_a_failed_job_and_the_sweep_goes_on(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "sweep"
    arguments = ["-m", f"hydra.sweep.dir={sweep_dir}", *TINY_VAE, *TWO_JOBS]
    sweep = subprocess.Popen([console_script("genlab-train"), *arguments], cwd=tmp_path, env=train_env(tmp_path),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:

        def only_job_0_runs() -> bool:  # job 1 ended, process and all, while job 0 trains
            ended = status(sweep_dir / "1") == "completed" and (sweep_dir / "0" / "checkpoints").is_dir()
            return ended and len(children(sweep.pid)) == 1

        wait_for(only_job_0_runs, "job 1's end while job 0 trains")
        (job_0,) = children(sweep.pid)
        os.kill(job_0, signal.SIGKILL)
        stdout, stderr = sweep.communicate(timeout=120)
    finally:
        sweep.kill()
    assert sweep.returncode == 1, stderr[-3000:]  # a job failed: the sweep says so in its exit status
    killed = "its process was killed by SIGKILL before it ended"
    assert f"genlab-train: job 0 failed ({sweep_dir / '0'}): {killed}" in stderr
    manifest = json.loads((sweep_dir / "0" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"].startswith(killed) and manifest["ended_at"]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [run["status"] for run in summary["runs"]] == ["failed", "completed"]
    assert summary["runs"][0]["error"].startswith(killed)
    assert (sweep_dir / "1" / "metrics.json").is_file()
    assert "1 of 2 jobs completed" in stdout


@pytest.mark.parametrize("n_jobs", ["0", "two"])
def test_a_bad_number_of_jobs_is_one_line(tmp_path: Path, n_jobs: str) -> None:
    from inprocess import call_entrypoint

    result = call_entrypoint("genlab-train", ["-m", "hydra/launcher=processes", f"hydra.launcher.n_jobs={n_jobs}",
                             "seed=1,2", *TINY_VAE], cwd=tmp_path, env=train_env(tmp_path))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"genlab-train: error: hydra.launcher.n_jobs={n_jobs if n_jobs == '0' else repr(n_jobs)}: "
        "give the number of jobs to run at once (>= 1)"
    )
