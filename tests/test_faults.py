"""Faults from the machine and the numbers, through the real entrypoint (in this process) where a run is the point:
a full disk, a read-only one, paths of the wrong kind, out of memory, NaN losses (automatic and manual
optimization, autograd's anomaly mode), a library refusing a setting, and a sweep with damaged runs. Each ends in one
line, a non-zero exit status, and a run folder whose files are whole: still loadable, or absent, never truncated.

The write helpers themselves are checked against a tiny tmpfs and a read-only mount (the tests run as root: a
read-only mount is what stops root, file permissions do not)."""

from __future__ import annotations

import json
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import QUIET_TRAIN, train_env
from inprocess import Result, call_entrypoint
from omegaconf import OmegaConf

from genlab import building
from genlab.building import build
from genlab.cache import cached
from genlab.callbacks.finite_loss import anomaly_error, is_finite
from genlab.errors import ConfigError, MachineError, NumericalError, user_error_of
from genlab.files import atomic_write, writable_folder, write_json_atomically, write_text_atomically
from genlab.models.vae import VAE
from genlab.run.checkpoint_io import RunCheckpointIO, read_checkpoint
from genlab.run.manifest import Manifest
from genlab.sweeps import summarize

#: Two batches an epoch, one for validation and test, no sanity check, pictures or sample metrics.
TINY = [
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "trainer.num_sanity_val_steps=0",
    "callbacks.samples=null",
    "metrics=none",
    "logger=csv",
    *QUIET_TRAIN,
]
VAE_TINY = [*TINY, "model.eval_iwae_k=2"]


def mount(folder: Path, *options: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        if os.environ.get("CI") or os.geteuid() == 0:
            pytest.fail(f"cannot mount a tmpfs at {folder} as root: {done.stderr.decode()}")
        pytest.skip("needs root to mount a tiny tmpfs")


@pytest.fixture(scope="module")
def disks(tmp_path_factory) -> Iterator[dict[str, Path]]:
    """`tiny`: a 200 KiB tmpfs; `runs`: a 64 MiB one for run folders; `readonly`: a read-only one."""
    root = tmp_path_factory.mktemp("disks")
    found = {"tiny": root / "tiny", "runs": root / "runs", "readonly": root / "readonly"}
    mounted = []
    try:
        for name, options in (("tiny", ["size=200k"]), ("runs", ["size=64m"]), ("readonly", ["ro", "size=64k"])):
            mount(found[name], *options)
            mounted.append(found[name])
        yield found
    finally:
        for folder in mounted:
            subprocess.run(["umount", "-l", str(folder)], check=False)


def no_partial_files(folder: Path) -> None:
    """No temporary file left, and every JSON, YAML and checkpoint file under `folder` reads back whole."""
    left = [p for p in folder.rglob("*.tmp")]
    assert not left, f"half-written files left behind: {left}"
    for path in folder.rglob("*"):
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yaml":
            OmegaConf.load(path)
        elif path.suffix == ".ckpt":
            read_checkpoint(path)


def one_line(result: Result, *fragments: str, program: str = "genlab-train") -> str:
    assert result.returncode == 2, f"exit status {result.returncode}:\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


# -- the write helpers against a full disk, a read-only one and wrong kinds of path -----------------------------------


def test_a_full_disk_keeps_the_last_good_file_and_says_so(disks: dict[str, Path]) -> None:
    folder = disks["tiny"] / "run"
    metrics = folder / "metrics.json"
    write_json_atomically(metrics, {"val/loss": 1.0})
    with pytest.raises(MachineError) as caught:
        write_text_atomically(metrics, "x" * 400_000)
    assert str(caught.value).startswith(f"cannot write {metrics}: No space left on device (ENOSPC); free space")
    assert json.loads(metrics.read_text()) == {"val/loss": 1.0}

    checkpoints = RunCheckpointIO()
    last = folder / "checkpoints" / "last.ckpt"
    checkpoints.save_checkpoint({"state_dict": {"w": torch.ones(100)}, "global_step": 7}, last)
    with pytest.raises(MachineError, match=r"last\.ckpt: No space left on device"):
        checkpoints.save_checkpoint({"state_dict": {"w": torch.ones(200_000)}, "global_step": 8}, last)
    assert read_checkpoint(last)["global_step"] == 7
    with pytest.raises(NumericalError, match=r"the weights became non-finite \(w\) by step 9, so last.ckpt was not"):
        checkpoints.save_checkpoint({"state_dict": {"w": torch.tensor([1.0, math.nan])}, "global_step": 9}, last)
    assert read_checkpoint(last)["global_step"] == 7
    no_partial_files(folder)

    # A cache on a full disk costs the cache, not the run.
    value = cached(folder / "cache.bin", lambda: b"y" * 400_000, Path.read_bytes, lambda v, p: p.write_bytes(v), "x")
    assert value.built and len(value.value) == 400_000 and not (folder / "cache.bin").exists()
    no_partial_files(folder)


def test_read_only_folders_and_paths_of_the_wrong_kind_are_one_line(disks: dict[str, Path], tmp_path: Path) -> None:
    readonly = disks["readonly"]
    with pytest.raises(MachineError, match=r"Read-only file system \(EROFS\); that file system is read-only"):
        write_json_atomically(readonly / "metrics.json", {})
    with pytest.raises(MachineError, match=f"cannot write {readonly / 'evals'}: Read-only file system"):
        writable_folder(readonly / "evals")
    a_file = tmp_path / "a_file"
    a_file.write_text("kept")
    with pytest.raises(MachineError, match=rf"File exists \(EEXIST\) at {a_file}; that path is a file where a folder"):
        write_text_atomically(a_file / "metrics.json", "{}")
    with pytest.raises(MachineError, match=r"Not a directory \(ENOTDIR\); a part of that path is a file"):
        writable_folder(a_file / "evals")
    (tmp_path / "a_folder").mkdir()
    folder_error = pytest.raises(MachineError, match=r"Is a directory \(EISDIR\); that path is a folder")
    with folder_error, atomic_write(tmp_path / "a_folder") as partial:
        partial.write_text("x")
    assert a_file.read_text() == "kept"
    no_partial_files(tmp_path)

    # The manifest cannot be marked failed on a read-only disk: the run's own error is what the user sees.
    manifest = Manifest(tmp_path / "run", 0, [])
    with pytest.raises(ZeroDivisionError), manifest.track():
        manifest.path = readonly / "manifest.json"
        raise ZeroDivisionError


def test_out_of_memory_and_autograd_anomalies_are_one_line() -> None:
    error = user_error_of(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB\nmore"))
    assert isinstance(error, MachineError) and "use a smaller batch (data.batch_size" in str(error)
    assert "Tried to allocate 20.00 GiB" in str(error) and "\n" not in str(error)
    assert isinstance(user_error_of(MemoryError()), MachineError)

    x = torch.zeros(3, requires_grad=True)
    with pytest.warns(UserWarning), torch.autograd.detect_anomaly():
        try:
            (x.sqrt() * 0).sum().backward()
        except RuntimeError as exc:
            found = anomaly_error(exc, step=12)
    assert found is not None and "found nan in the gradient at step 12: the backward of Sqrt" in str(found)
    assert anomaly_error(RuntimeError("shape mismatch"), 0) is None


def buggy_constructor(width: int) -> None:
    """Stands for genlab's own code (the test points `genlab.building` at this folder)."""
    raise ValueError(f"width {width} went wrong inside genlab")


def test_what_a_library_refuses_names_the_setting_and_a_genlab_bug_keeps_its_traceback(monkeypatch) -> None:
    trainer = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "strategy": "foo", "logger": False})
    with pytest.raises(ConfigError, match=r"^trainer.strategy=foo: You selected an invalid strategy name"):
        build("trainer", trainer)
    checkpoint = {"_target_": "pytorch_lightning.callbacks.ModelCheckpoint", "mode": "sideways"}
    with pytest.raises(ConfigError, match=r"^callbacks.best.mode=sideways: `mode` can be min, max but got sideways"):
        build("callbacks.best", OmegaConf.create(checkpoint))
    attention = {"_target_": "torch.nn.MultiheadAttention", "embed_dim": 10, "num_heads": 3}
    with pytest.raises(ConfigError, match=r"^model.net.embed_dim=10: embed_dim must be divisible by num_heads"):
        build("model.net", OmegaConf.create(attention))

    monkeypatch.setattr(building, "_GENLAB", str(Path(__file__).resolve().parent))
    with pytest.raises(Exception) as caught:
        build("model.net", OmegaConf.create({"_target_": "test_faults.buggy_constructor", "width": 3}))
    assert not isinstance(caught.value, ConfigError) and user_error_of(caught.value) is None


# -- through the entrypoint --------------------------------------------------------------------------------------------


def train(root: Path, *overrides: str, tiny: list[str] = VAE_TINY) -> Result:
    return call_entrypoint("genlab-train", [*tiny, *overrides], cwd=root, env=train_env(root / "outputs"))


def test_bad_paths_and_refused_settings_end_the_run_in_one_line(disks: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("kept")
    one_line(train(tmp_path, "hydra.run.dir=a_file"), "a_file: File exists (EEXIST); that path is a file")
    one_line(train(tmp_path, "hydra.run.dir=a_file/run"), "a_file/run: Not a directory (ENOTDIR)")
    one_line(train(tmp_path, f"hydra.run.dir={disks['readonly']}/run"), "Read-only file system (EROFS)")
    assert (tmp_path / "a_file").read_text() == "kept"
    line = one_line(train(tmp_path, "trainer.strategy=foo", "hydra.run.dir=strategy"), "trainer.strategy=foo: ")
    assert "(pytorch_lightning refused it; check trainer.*)" in line
    assert json.loads((tmp_path / "strategy" / "manifest.json").read_text())["status"] == "failed"


@pytest.fixture(scope="module")
def nan_run(disks: dict[str, Path]) -> tuple[Result, Path]:
    """A VAE run on the 64 MiB disk whose loss turns NaN at step 4 (the first batch of its third epoch)."""
    original = VAE.training_step

    def nan_from_step_4(self, batch, batch_idx):
        loss = original(self, batch, batch_idx)
        return loss * math.nan if self.global_step >= 4 else loss

    run_dir = disks["runs"] / "nan"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(VAE, "training_step", nan_from_step_4)
        result = train(disks["runs"], "trainer.max_epochs=3", f"hydra.run.dir={run_dir}")
    return result, run_dir


def test_a_nan_loss_stops_the_run_at_its_step_and_keeps_the_checkpoint_before_it(nan_run) -> None:
    result, run_dir = nan_run
    line = one_line(result, "train/loss became nan at step 4 (batch 0 of epoch 2); lower the learning rate")
    assert "trainer.gradient_clip_val" in line and "trainer.precision=32-true" in line
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "train/loss became nan at step 4" in manifest["error"]
    last = read_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 4 and all(torch.isfinite(t).all() for t in last["state_dict"].values())
    assert not (run_dir / "metrics.json").exists()
    no_partial_files(run_dir)


def test_a_full_disk_fails_the_resume_in_one_line_and_the_run_goes_on_once_there_is_room(
    nan_run, disks: dict[str, Path]
) -> None:
    _, run_dir = nan_run
    last = run_dir / "checkpoints" / "last.ckpt"
    before = last.read_bytes()
    stat = os.statvfs(run_dir)
    filler = disks["runs"] / "filler"
    filler.write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - len(before) // 2))  # room for records, not a ckpt
    try:
        result = train(disks["runs"], f"resume={run_dir}", tiny=QUIET_TRAIN)
    finally:
        filler.unlink()
    line = one_line(result, "No space left on device (ENOSPC); free space on that disk")
    assert f"then go on from last.ckpt: genlab-train resume={run_dir}" in line
    assert last.read_bytes() == before and read_checkpoint(last)["global_step"] == 4
    json.loads((run_dir / "manifest.json").read_text())  # whole, whatever it could record
    no_partial_files(run_dir)

    train(disks["runs"], f"resume={run_dir}", tiny=QUIET_TRAIN)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed", manifest
    assert json.loads((run_dir / "metrics.json").read_text())["global_step"] == 6


def test_a_nan_in_either_gan_loss_is_named(tmp_path: Path, monkeypatch) -> None:
    import genlab.models.gan as gan

    monkeypatch.setattr(gan, "generator_loss", lambda kind, scores: scores.mean() * math.nan)
    result = train(tmp_path, "model=gan", "metrics=sample_quality", "hydra.run.dir=gan", tiny=TINY)
    one_line(result, "train/g_loss became nan at step 1 (batch 0 of epoch 0)")
    assert not (tmp_path / "gan" / "checkpoints").exists() or not any((tmp_path / "gan" / "checkpoints").iterdir())


def test_out_of_memory_in_a_step_and_an_anomaly_in_the_gradient_are_one_line(tmp_path: Path, monkeypatch) -> None:
    def out_of_memory(self, batch, batch_idx):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.2 GiB total)")

    with monkeypatch.context() as patch:
        patch.setattr(VAE, "training_step", out_of_memory)
        result = train(tmp_path, "hydra.run.dir=oom")
    one_line(result, "out of memory (CUDA out of memory. Tried to allocate 20.00 GiB", "use a smaller batch")
    assert json.loads((tmp_path / "oom" / "manifest.json").read_text())["status"] == "failed"

    original = VAE.training_step

    def nan_in_a_gradient(self, batch, batch_idx):  # the loss stays finite; the backward of sqrt at 0 is not
        return original(self, batch, batch_idx) + (torch.zeros(2, requires_grad=True).sqrt() * 0).sum()

    monkeypatch.setattr(VAE, "training_step", nan_in_a_gradient)
    result = train(tmp_path, "trainer.detect_anomaly=true", "hydra.run.dir=anomaly")
    one_line(result, "trainer.detect_anomaly found nan in the gradient at step 0: the backward of Sqrt")


def test_a_sweep_records_a_nan_job_as_failed_and_compare_skips_damaged_runs(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    result = call_entrypoint(
        "genlab-train",
        ["-m", "model.optimizer.lr=1e-3,2e-3,1e6", "trainer.max_epochs=1", f"hydra.sweep.dir={sweep}", *VAE_TINY],
        cwd=tmp_path,
        env=train_env(tmp_path / "outputs"),
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert "genlab-train: job 2 failed" in result.stderr and "train/loss became nan at step" in result.stderr
    statuses = [json.loads((sweep / str(job) / "manifest.json").read_text())["status"] for job in range(3)]
    assert statuses == ["completed", "completed", "failed"]

    (sweep / "1" / "metrics.json").write_text('{"val/elbo": 3.')  # cut off by a copy that did not finish
    (sweep / "3").mkdir()  # a job folder that never got its files
    compared = call_entrypoint("genlab-compare", [str(sweep)], cwd=tmp_path, env=dict(os.environ))
    assert compared.returncode == 0, compared.stderr[-3000:]
    warnings = [line for line in compared.stderr.splitlines() if line.startswith("genlab-compare: warning: skipped")]
    assert len(warnings) == 2 and str(sweep / "1") in warnings[0] and "metrics.json is not readable JSON" in warnings[0]
    assert str(sweep / "3") in warnings[1] and "no .hydra/config.yaml" in warnings[1]
    assert "2 runs (2 unreadable runs skipped)" in compared.stdout and "Traceback" not in compared.stderr
    markdown = (sweep / "comparison.md").read_text()
    assert "## Runs that could not be read (skipped)" in markdown and f"| {sweep / '1'} |" in markdown

    jobs = {job["job"]: job for job in summarize(sweep)}
    assert jobs["1"]["status"] == "unreadable" and "metrics.json is not readable JSON" in jobs["1"]["error"]

    for job in range(3):
        (sweep / str(job) / ".hydra" / "config.yaml").write_text("")
    refused = call_entrypoint("genlab-compare", [str(sweep)], cwd=tmp_path, env=dict(os.environ))
    one_line(refused, "none of the 3 run folders under", "is readable", program="genlab-compare")


@pytest.mark.parametrize(
    ("loss", "finite"),
    [
        (torch.tensor(1.5, requires_grad=True) * 2, True),
        (torch.tensor(float("nan")), False),
        (torch.tensor([-float("inf")]), False),
        (torch.tensor([1.0, 2.0]), True),
        (torch.tensor([1.0, float("nan")]), False),
        (torch.tensor(1.0, dtype=torch.bfloat16), True),
    ],
)
def test_the_loss_check_tells_finite_from_nan_and_inf(loss: torch.Tensor, finite: bool) -> None:
    assert is_finite(loss) is finite
