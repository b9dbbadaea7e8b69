"""A newcomer's mistakes leave no trace: bad values stop genlab-train before any folder or log line; "the latest run"
is the latest completed one (outputs/train/latest); genlab-eval on a failed run says it failed; `threads=` reaches
torch in every command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUIET_TRAIN, train_env
from inprocess import Result, call_entrypoint

from genlab.data.torchvision_images import TorchvisionDataModule
from genlab.errors import DataError

TINY = [
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks.samples=null",
    "metrics=none",
    "model.eval_iwae_k=2",
    *QUIET_TRAIN,
]


class Folder:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = train_env(root / "outputs")
        self.threads: list[int] = []  # what the commands asked torch for

    def run(self, program: str, *arguments: str) -> Result:
        return call_entrypoint(program, list(arguments), cwd=self.root, env=self.env)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Folder:
    """A scratch folder holding one completed run (with threads=2, the setting a user would change)."""
    folder = Folder(tmp_path_factory.mktemp("newcomer"))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "set_num_threads", folder.threads.append)
        result = folder.run("genlab-train", *TINY, "threads=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder


def one_line(result: Result, program: str) -> str:
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{program}: error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("data.batch_size=abc", "data.batch_size='abc' is not allowed: expected an integer > 0"),
        ("trainer.max_epochs=one", "trainer.max_epochs='one' is not allowed"),
        ("threads=0", "threads=0 is not allowed: expected an integer > 0 or null"),
    ],
)
def test_a_bad_value_stops_before_any_folder_or_log_line(folder: Folder, value: str, message: str) -> None:
    runs = sorted((folder.root / "outputs" / "train" / "runs").iterdir())
    result = folder.run("genlab-train", value)
    assert message in one_line(result, "genlab-train") and not result.stdout.strip()
    assert sorted((folder.root / "outputs" / "train" / "runs").iterdir()) == runs


def test_latest_links_the_completed_run_and_eval_and_sample_take_it(folder: Folder) -> None:
    (run,) = (folder.root / "outputs" / "train" / "runs").iterdir()
    latest = folder.root / "outputs" / "train" / "latest"
    assert latest.is_symlink() and latest.resolve() == run
    assert json.loads((latest / "manifest.json").read_text())["status"] == "completed"
    assert folder.threads[0] == 2  # then tests/inprocess.py restores its own count
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "set_num_threads", folder.threads.append)
        assert folder.run("genlab-eval", "run=outputs/train/latest", "threads=3").returncode == 0
    assert 3 in folder.threads
    assert (run / "eval.json").is_file()
    refused = folder.run("genlab-sample", "run=outputs/train/latest", "threads=two")
    assert "threads='two' is not allowed" in one_line(refused, "genlab-sample")


def test_eval_and_sample_on_a_failed_run_say_it_failed_with_its_error(folder: Folder) -> None:
    (run,) = (folder.root / "outputs" / "train" / "runs").iterdir()
    failed = folder.root / "outputs" / "failed"
    shutil.copytree(run / ".hydra", failed / ".hydra")
    error = "DataError: mnist is not in data/MNIST/raw"
    (failed / "manifest.json").write_text(json.dumps({"status": "failed", "error": error}))
    for program in ("genlab-eval", "genlab-sample"):
        line = one_line(folder.run(program, f"run={failed}"), program)
        assert f"{failed} failed ({error}) before writing a checkpoint: nothing to load" in line
    interrupted = Path(shutil.copytree(run, folder.root / "outputs" / "interrupted"))
    (interrupted / "manifest.json").write_text(json.dumps({"status": "interrupted", "error": None}))
    line = one_line(folder.run("genlab-eval", f"run={interrupted}"), "genlab-eval")
    assert f"{interrupted} interrupted: no best was evaluated" in line and "ckpt=last" in line
    assert folder.run("genlab-eval", f"run={interrupted}", "ckpt=last").returncode == 0


def test_a_failed_download_removes_the_folders_it_made(tmp_path: Path, monkeypatch) -> None:
    data = TorchvisionDataModule("mnist", data_dir=str(tmp_path / "data"))

    def offline(*args, **kwargs):
        (tmp_path / "data" / "MNIST" / "raw").mkdir(parents=True)  # as torchvision does before downloading
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nName or service not known")

    monkeypatch.setattr(data, "_open_splits", offline)
    with pytest.raises(DataError, match="could not be downloaded"):
        data.prepare_data()
    assert not (tmp_path / "data").exists()
