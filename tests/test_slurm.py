"""The SLURM launcher (hydra/launcher=slurm, through submitit) against a real one-node cluster on this machine: a
sweep runs as SLURM jobs, and a job requeued while it trains resumes in its own folder and ends as an unbroken run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import QUIET_TRAIN, train_env
from inprocess import call_entrypoint, console_script
from requires import requires_programs
from slurm_cluster import slurm_cluster
from test_dead_jobs import status
from test_optuna_sweeper import EPOCHS, states, study_of
from test_sweeps import TINY_VAE, Sweep

pytestmark = requires_programs("slurmctld", "slurmd", "munged")

#: One CPU and no GPU per job, so the cluster's two CPUs run two jobs at once.
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.partition=debug",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]
#: Long enough (30 epochs of 5 steps) for a requeue to land in the middle of training.
LONG = [
    "seed=1",
    "trainer.max_epochs=30",
    "trainer.limit_train_batches=5",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "metrics=none",
    "callbacks.samples=null",
    "model.eval_iwae_k=2",
    *QUIET_TRAIN,
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> dict[str, str]:
    with slurm_cluster(tmp_path_factory.mktemp("slurm")) as env:
        yield env


def slurm(cluster: dict[str, str], *command: str) -> str:
    return subprocess.run(command, env={**train_env(Path("/nonexistent")), **cluster}, capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip()  # fmt: skip


def job_process(sweep_dir: Path) -> int:
    """The one running SLURM task of the sweep: its Python process (submitit's `_submit` of its folder)."""
    (pid,) = [int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit() and is_task(proc, sweep_dir)]
    return pid


def is_task(proc: Path, sweep_dir: Path) -> bool:
    try:
        command = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:  # it ended meanwhile
        return False
    python = Path(command[0]).name.startswith("python")  # not the srun that started it
    return python and "submitit.core._submit" in command and any(str(sweep_dir) in part for part in command)


def wait_for(ready, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} did not happen in {timeout} s"
        time.sleep(0.5)


def test_a_sweep_runs_as_slurm_jobs_and_compare_tables_it(cluster: dict[str, str], tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, *SLURM, "model.latent_dim=4,8", "seed=1,2", *TINY_VAE, process=True, env=cluster)
    assert sweep.process.returncode == 0, sweep.process.stderr[-3000:]
    assert [sweep.json(job, "manifest.json")["status"] for job in sweep.jobs] == ["completed"] * 4
    assert all("_submit.py" in sweep.json(job, "manifest.json")["command"] for job in sweep.jobs)
    # One SLURM array job with a task per job of the sweep: submitit keeps each task's log (<array>_<task>_0_log.out).
    logs = sorted((sweep.dir / ".submitit").glob("*/*_log.out"))
    assert [log.name.split("_")[1] for log in logs] == ["0", "1", "2", "3"]
    compared = call_entrypoint("genlab-compare", [str(sweep.dir)], cwd=tmp_path, env=train_env(tmp_path))
    assert compared.returncode == 0, compared.stderr
    assert "| best | model.latent_dim | n | failed | val/elbo |" in (sweep.dir / "comparison.md").read_text()


def test_a_requeued_job_resumes_in_its_folder_and_ends_as_an_unbroken_run(
    cluster: dict[str, str], tmp_path: Path, genlab_train
) -> None:
    sweep_dir = tmp_path / "sweep"
    env = {**train_env(tmp_path / "outputs"), **cluster}
    arguments = ["-m", *SLURM, f"hydra.sweep.dir={sweep_dir}", *LONG]
    launcher = subprocess.Popen([console_script("genlab-train"), *arguments], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        wait_for(lambda: (sweep_dir / "0" / "checkpoints" / "last.ckpt").is_file(), "a first last.ckpt")
        (job,) = slurm(cluster, "squeue", "-h", "-o", "%i").split()
        slurm(cluster, "scontrol", "requeue", job)  # as preemption does: SIGTERM, then the job is queued again
        wait_for(lambda: slurm(cluster, "squeue", "-h", "-j", job, "-o", "%t") == "PD", "the requeue")
        slurm(cluster, "scontrol", "update", f"JobId={job}", "StartTime=now")  # not SLURM's 2 minutes' wait
        output, _ = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode == 0, output[-3000:]
    manifest = json.loads((sweep_dir / "0" / "manifest.json").read_text())
    assert manifest["status"] == "completed", manifest
    assert [resume["previous_status"] for resume in manifest["resumes"]] == ["interrupted"]
    assert manifest["resumes"][0]["slurm_restart_count"] == 1
    requeued = json.loads((sweep_dir / "0" / "metrics.json").read_text())

    unbroken = genlab_train(*LONG).check().metrics
    assert requeued["global_step"] == unbroken["global_step"] == 150
    # Not bit for bit: the requeue lands mid-epoch, and Lightning resumes an epoch's remaining batches in a fresh
    # order (genlab.callbacks.run_state.CheckpointOnInterrupt), so the same steps see other batches of that epoch.
    for name in ("val/elbo", "test/elbo", "test/nll_iwae"):
        assert requeued[name] == pytest.approx(unbroken[name], rel=5e-3), name


def test_a_job_of_two_slurm_tasks_trains_ddp_into_one_run_folder(cluster: dict[str, str], tmp_path: Path) -> None:
    # srun starts the job's two tasks; Lightning reads their ranks from SLURM (SLURM_PROCID) and joins them (gloo).
    two_tasks = [*SLURM, "hydra.launcher.tasks_per_node=2", "trainer=ddp_sim", "trainer.devices=2"]
    sweep = Sweep(tmp_path, *two_tasks, "seed=2", *TINY_VAE, process=True, env=cluster)
    assert sweep.process.returncode == 0, sweep.process.stderr[-3000:]
    (job,) = sweep.jobs
    assert sweep.json(job, "manifest.json")["status"] == "completed"
    assert sweep.json(job, "metrics.json")["global_step"] > 0
    # (job,) above: one run folder; each task's log says it was one of the two members of one process group.
    logs = sorted((sweep.dir / ".submitit").glob("*/*_log.out"))
    members = [re.search(r"GLOBAL_RANK: (\d), MEMBER: (\d)/(\d)", log.read_text()).groups() for log in logs]
    assert members == [("0", "1", "2"), ("1", "2", "2")]


def test_an_optuna_study_runs_its_trials_as_slurm_jobs_sharing_its_storage(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    # Two trials at once (one round of asks, to keep the suite short), each a SLURM job that reports its validations
    # to the study's SQLite file in the sweep folder.
    study = ["hparams_search=vae_optuna", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2", *EPOCHS]
    sweep = Sweep(tmp_path, *SLURM, *study, *TINY_VAE, process=True, env=cluster)
    assert sweep.process.returncode == 0, sweep.process.stderr[-3000:]
    trials = study_of(sweep.dir).trials
    assert states(study_of(sweep.dir)) == ["COMPLETE"] * 2
    assert [job.name for job in sweep.jobs] == ["0", "1"]
    for trial, job in zip(trials, sweep.jobs, strict=True):
        metrics = sweep.json(job, "metrics.json")
        assert trial.value == pytest.approx(metrics["val/elbo"])
        # Written by the job on the SLURM node: one report per validation, at its global step.
        assert sorted(trial.intermediate_values) == [metrics["global_step"] // 2, metrics["global_step"]]
    assert len(list((sweep.dir / ".submitit").glob("*/*_log.out"))) == 2  # one SLURM job per trial


def test_a_job_killed_on_its_node_is_a_failed_job_and_the_sweep_goes_on(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    sweep_dir = tmp_path / "sweep"
    # Job 0 trains until it is killed; job 1 ends at once.
    arguments = ["-m", *SLURM, f"hydra.sweep.dir={sweep_dir}", *TINY_VAE, "trainer.max_epochs=100,1"]
    launcher = subprocess.Popen([console_script("genlab-train"), *arguments], cwd=tmp_path,
                                env={**train_env(tmp_path / "outputs"), **cluster}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:

        def only_job_0_runs() -> bool:
            return (
                (sweep_dir / "0" / "checkpoints").is_dir()
                and status(sweep_dir / "1") == "completed"
                and len(slurm(cluster, "squeue", "-h", "-o", "%i").split()) == 1
            )

        wait_for(only_job_0_runs, "job 1's end while job 0 trains")
        (job,) = slurm(cluster, "squeue", "-h", "-o", "%i").split()
        os.kill(job_process(sweep_dir), signal.SIGKILL)  # as the kernel's out-of-memory killer does
        stdout, stderr = launcher.communicate(timeout=120)
    finally:
        launcher.kill()
    assert launcher.returncode == 1, stderr[-3000:]  # the sweep ends, and says that a job failed
    manifest = json.loads((sweep_dir / "0" / "manifest.json").read_text())
    assert manifest["status"] == "failed", manifest
    assert manifest["error"].startswith(f"SLURM job {job} ended FAILED without a result"), manifest["error"]
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert [run["status"] for run in summary["runs"]] == ["failed", "completed"]
    assert "1 of 2 jobs completed" in stdout


#: A single run as an sbatch script, as docs/sweeps.md gives it for a real cluster (there: a GPU partition and DDP).
SBATCH_SCRIPT = """#!/bin/bash
#SBATCH --job-name=genlab-run
#SBATCH --partition=debug
#SBATCH --nodes=1 --ntasks-per-node=1 --cpus-per-task=1 --mem=1G
#SBATCH --time=00:10:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output={log}
srun {genlab_train} hydra.run.dir={run_dir} {overrides}
"""


def test_a_requeued_sbatch_run_continues_in_its_folder(cluster: dict[str, str], tmp_path: Path) -> None:
    run_dir, log = tmp_path / "run", tmp_path / "slurm.log"
    script = tmp_path / "run.sbatch"
    overrides = " ".join(LONG)
    script.write_text(SBATCH_SCRIPT.format(log=log, genlab_train=console_script("genlab-train"), run_dir=run_dir,
                                           overrides=overrides))  # fmt: skip
    env = {**train_env(tmp_path / "outputs"), **cluster}
    submitted = subprocess.run(["sbatch", "--parsable", str(script)], env=env, cwd=tmp_path, capture_output=True,
                               text=True, check=True, timeout=30)  # fmt: skip
    job = submitted.stdout.strip()
    wait_for(lambda: (run_dir / "checkpoints" / "last.ckpt").is_file(), "a first last.ckpt")
    slurm(cluster, "scontrol", "requeue", job)  # as preemption does: SIGTERM, then the job is queued again
    wait_for(lambda: slurm(cluster, "squeue", "-h", "-j", job, "-o", "%t") == "PD", "the requeue")
    slurm(cluster, "scontrol", "update", f"JobId={job}", "StartTime=now")
    wait_for(lambda: slurm(cluster, "squeue", "-h", "-j", job, "-o", "%t") == "", "the job's end", timeout=240)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed", log.read_text()[-3000:]
    assert manifest["slurm_job_id"] == job
    assert [resume["previous_status"] for resume in manifest["resumes"]] == ["interrupted"]
    assert manifest["resumes"][0]["slurm_restart_count"] == 1
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 150
