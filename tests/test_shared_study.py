"""One Optuna study in PostgreSQL shared by two sweeps at once, as sweeps on two machines share it
(`hydra.sweeper.storage=postgresql+psycopg2://...`): every trial runs once, in the folder of the sweep that asked
for it, and the study holds them all. The server is the test session's own (tests/postgres_server.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from conftest import train_env
from inprocess import console_script
from postgres_server import postgres_server
from requires import requires_extra, requires_programs
from test_sweeps import TINY_VAE

pytestmark = [requires_programs("initdb", "pg_ctl", "runuser"), requires_extra("postgres")]


@pytest.fixture(scope="module")
def storage() -> str:
    with postgres_server() as url:
        yield url


def test_two_sweeps_share_one_study_in_postgresql(storage: str, tmp_path: Path) -> None:
    import optuna

    study = ["hparams_search=vae_optuna", f"hydra.sweeper.storage={storage}", "hydra.sweeper.n_trials=3"]
    workers = [
        subprocess.Popen(
            [console_script("genlab-train"), "-m", *study, f"hydra.sweep.dir={tmp_path / name}", *TINY_VAE],
            cwd=tmp_path,
            env=train_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in ("machine_a", "machine_b")
    ]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, stderr[-3000:]
    trials = optuna.load_study(study_name="vae", storage=storage).trials
    # Each sweep asks while the study holds fewer than 3 finished trials: the two together may ask one more.
    assert 3 <= len(trials) <= 4 and all(trial.state.name == "COMPLETE" for trial in trials)
    folders = {int(job.name): job for name in ("machine_a", "machine_b") for job in (tmp_path / name).iterdir()
               if job.name.isdigit()}  # fmt: skip
    assert sorted(folders) == [trial.number for trial in trials]  # each trial ran once, in one sweep's folder
    for trial in trials:
        metrics = json.loads((folders[trial.number] / "metrics.json").read_text())
        assert trial.value == pytest.approx(metrics["val/elbo"])
