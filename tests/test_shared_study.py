"""One Optuna study in PostgreSQL shared by two sweeps at once, as sweeps on two machines share it
(`hydra.sweeper.storage=postgresql+psycopg2://...`): every trial runs once, in the folder of the sweep that asked
for it, and the study holds them all. The server is the test session's own (tests/postgres_server.py)."""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import train_env
from inprocess import console_script
from postgres_server import postgres_server
from requires import requires_extra, requires_programs
from test_sweeps import TINY_VAE

from genlab.sweeper import study as study_module
from genlab.sweeper.study import SWEEP_ATTR, UNNAMED_GRACE, create_study_racing, requeue_stale_trials

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


def test_sweeps_that_start_at_once_on_a_new_database_all_open_the_study(storage: str) -> None:
    """Each sweep creates Optuna's tables on a new database; those that lose the race try again instead of failing
    on a duplicate table (seen in CI: 'duplicate key value violates unique constraint pg_type_typname_nsp_index')."""
    import optuna
    import sqlalchemy

    with sqlalchemy.create_engine(storage, isolation_level="AUTOCOMMIT").connect() as server:
        server.execute(sqlalchemy.text("CREATE DATABASE opened_at_once"))
    fresh = storage.rsplit("/", 1)[0] + "/opened_at_once"
    start = threading.Barrier(4)

    def open_it() -> str:
        start.wait()
        return create_study_racing(study_name="race", storage=fresh, direction="minimize").study_name

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(lambda _: open_it(), range(4))) == ["race"] * 4
    assert [s.study_name for s in optuna.get_all_study_summaries(fresh)] == ["race"]


def test_a_study_opened_while_its_tables_are_being_made_is_opened_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna
    import sqlalchemy.exc

    calls: list[dict] = []

    def losing_once(**study: object) -> str:
        calls.append(study)
        if len(calls) == 1:
            raise sqlalchemy.exc.IntegrityError("CREATE TABLE alembic_version", {}, Exception("duplicate key"))
        return "opened"

    monkeypatch.setattr(optuna, "create_study", losing_once)
    assert create_study_racing(study_name="s", storage="sqlite://") == "opened"
    assert len(calls) == 2 and all(call["load_if_exists"] for call in calls)


def test_a_trial_another_sweep_has_just_asked_is_not_taken_for_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI: a sweep starting while the other had asked its first trial but not yet named its folder told that
    trial failed, and the other's job could no longer report to it. Only this folder's running trials are stale."""
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}")
    just_asked = study.ask()  # another sweep's, before its set_user_attr(SWEEP_ATTR, ...)
    elsewhere = study.ask()
    elsewhere.set_user_attr(SWEEP_ATTR, str(tmp_path / "other_sweep"))
    died_here = study.ask()
    died_here.set_user_attr(SWEEP_ATTR, str((tmp_path / "sweep").resolve()))
    assert requeue_stale_trials(study, tmp_path / "sweep", shared=True) == 1
    states = [trial.state.name for trial in study.get_trials()]
    assert states == ["RUNNING", "RUNNING", "FAIL", "WAITING"]  # the stale one told failed and asked again
    assert just_asked.number == 0 and study.get_trials()[3].user_attrs["requeued_from"] == died_here.number
    # Unnamed for longer than a sweep takes to name its trial: one that died between asking and naming.
    later = datetime.datetime.now() + UNNAMED_GRACE * 2
    monkeypatch.setattr(study_module.datetime, "datetime", type("Later", (datetime.datetime,), {"now": lambda: later}))
    assert requeue_stale_trials(study, tmp_path / "sweep", shared=True) == 1
    assert study.get_trials()[0].state.name == "FAIL" and study.get_trials()[1].state.name == "RUNNING"
