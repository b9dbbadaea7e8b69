"""Signals and ranks, where the process is the point: SIGTERM before `fit` and to a sweep, a second SIGTERM, and
ranks started by hand (torchrun) sharing one run folder."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from conftest import QUIET_TRAIN, TINY_LM_NET, train_env
from inprocess import console_script

from genlab.interrupts import SIGTERM_STATUS, Terminated, stop_on_sigterm

QUIET = [*QUIET_TRAIN, "callbacks.samples=null"]


def start(root: Path, *arguments: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [console_script("genlab-train"), *arguments],
        cwd=root,
        env={**train_env(root / "outputs"), **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def wait_for(path_glob: str, root: Path, process: subprocess.Popen, timeout: float = 120) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(root.glob(path_glob))
        if found:
            return found[0]
        if process.poll() is not None:
            raise AssertionError(f"the process ended first: {process.communicate()[1][-3000:]}")
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError(f"nothing matched {path_glob} in {timeout} s")


def finish(process: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """The process's output once it has ended; past `timeout` it is killed and the test fails with what it wrote."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"still running after {timeout} s:\n{stdout[-2000:]}\n{stderr[-3000:]}") from None


def test_sigterm_while_the_data_is_read_marks_the_run_interrupted(tmp_path: Path) -> None:
    """Training a BPE vocabulary on 2 MB of text takes seconds, all before `fit`, where Lightning does not listen."""
    data = ["data=python_source", "data.tokenizer=bpe", "data.vocab_size=2000", "data.max_chars=2000000"]
    cache = {"GENLAB_CACHE_DIR": str(tmp_path / "fresh-cache")}  # the vocabulary is trained, not read from a cache
    process = start(tmp_path, *TINY_LM_NET, *data, *QUIET, "hydra.run.dir=outputs/run", env=cache)
    manifest = wait_for("outputs/run/manifest.json", tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = finish(process)
    assert process.returncode == SIGTERM_STATUS, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    record = json.loads(manifest.read_text())
    assert record["status"] == "interrupted" and record["ended_at"]
    assert not list((tmp_path / "outputs" / "run").glob("checkpoints/*.ckpt")), "the signal came before fit"


def test_sigterm_stops_a_sweep_with_its_summary(tmp_path: Path) -> None:
    tiny = ["trainer.max_epochs=50", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "metrics=none"]
    process = start(tmp_path, "-m", "seed=1,2,3", *tiny, *QUIET, "hydra.sweep.dir=outputs/sweep")
    wait_for("outputs/sweep/0/checkpoints/last.ckpt", tmp_path, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = finish(process)
    assert process.returncode == SIGTERM_STATUS, stderr[-3000:]
    summary = json.loads((tmp_path / "outputs" / "sweep" / "sweep_summary.json").read_text())
    assert summary["runs"][0]["status"] == "interrupted"
    assert not (tmp_path / "outputs" / "sweep" / "2").exists(), "the sweep went on after SIGTERM"


def test_the_first_sigterm_in_fit_is_lightnings_and_a_second_stops_at_once() -> None:
    """In `fit`, Lightning's handler runs first and then calls the one it found (genlab's), as `_HandlersCompose`
    does: the first SIGTERM lets Lightning finish its step, the second raises at once."""
    with stop_on_sigterm() as received:
        genlab_handler = signal.getsignal(signal.SIGTERM)
        lightning_calls = []

        def lightning_handler(signum, frame):
            lightning_calls.append(signum)
            genlab_handler(signum, frame)

        signal.signal(signal.SIGTERM, lightning_handler)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.01)
        assert lightning_calls == [signal.SIGTERM] and received.terminated == 1
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is not genlab_handler, "the previous handler came back"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_ranks_started_by_torchrun_share_one_run_folder(tmp_path: Path) -> None:
    """Two processes with the variables torchrun sets: one run folder, named after the rendezvous id. Rank 1 starts
    first: its record of the config must not make rank 0 take the folder for an older run."""
    base = {
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "TORCHELASTIC_RUN_ID": "job42",
        "OMP_NUM_THREADS": "1",
    }
    arguments = ["trainer=ddp_sim", "debug=limit", "metrics=none", "logger=csv", *QUIET]
    logs = {rank: tmp_path / f"rank{rank}.log" for rank in (1, 0)}
    ranks = []
    for rank, log in logs.items():  # to files: a rank blocked on a full pipe would hold up the other at a barrier
        env = {**train_env(tmp_path / "outputs"), **base, "RANK": str(rank), "LOCAL_RANK": str(rank)}
        with log.open("w") as output:
            ranks.append(
                subprocess.Popen(
                    [console_script("genlab-train"), *arguments],
                    cwd=tmp_path,
                    env=env,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    for process, log in zip(ranks, logs.values(), strict=True):
        try:
            process.wait(timeout=300)
        except subprocess.TimeoutExpired:
            for other in ranks:
                os.killpg(other.pid, signal.SIGKILL)
        assert process.returncode == 0, log.read_text()[-3000:]
    runs = list((tmp_path / "outputs" / "train" / "runs").iterdir())
    assert [run.name for run in runs] == ["torchrun-job42"]
    manifest = json.loads((runs[0] / "manifest.json").read_text())
    assert manifest["status"] == "completed"
    assert (runs[0] / "metrics.json").is_file()
    assert (runs[0] / ".hydra" / "config.yaml").is_file() and (runs[0] / ".hydra_rank1" / "config.yaml").is_file()
