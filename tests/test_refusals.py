"""What genlab refuses, and that a refusal is one line, exit status 2, and no damage: every run folder involved is
byte for byte what it was. Each case goes through the real entrypoint (in this process)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUIET_TRAIN, train_env
from inprocess import Result, call_entrypoint
from omegaconf import OmegaConf

import genlab
from genlab.errors import ConfigError
from genlab.run.lock import run_lock

# Two epochs of two batches, quietly: what every run of these tests shares.
TINY = [
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "callbacks.samples=null",
    *QUIET_TRAIN,
]
# The VAE whose run folder the cases below must not damage.
VAE = [*TINY, "metrics=none", "model.eval_iwae_k=2"]


class Workspace:
    """A scratch folder where the console scripts run as a user would run them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = train_env(root / "outputs")
        (root / "empty.txt").write_text("")
        (root / "binary.bin").write_bytes(bytes(range(256)) * 20)

    def run(self, program: str, *arguments: str, **env: str) -> Result:
        return call_entrypoint(program, list(arguments), cwd=self.root, env={**self.env, **env})

    def train(self, name: str, *overrides: str) -> Path:
        result = self.run("genlab-train", *VAE, *overrides, f"hydra.run.dir=outputs/{name}")
        assert result.returncode == 0, result.stderr[-3000:]
        return self.root / "outputs" / name

    def copy(self, run_dir: Path, name: str) -> Path:
        return Path(shutil.copytree(run_dir, self.root / "outputs" / name))


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file under `folders` (the outputs folder, say) and its checksum; not the lock files, which say who holds
    a folder (the test that plays another writer takes one)."""
    return {
        str(path): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in folders
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


def refused(result: Result, program: str, message: str) -> str:
    """The one error line of a refused command: exit status 2, no traceback, `message` in it."""
    assert result.returncode == 2, f"exit status {result.returncode}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"{program}: error:")]
    assert len(lines) == 1, result.stderr[-3000:]
    assert message in lines[0], f"{message!r} not in {lines[0]!r}"
    assert len(lines[0]) < 800, lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    return Workspace(tmp_path_factory.mktemp("refusals"))


@pytest.fixture(scope="module")
def run_dir(workspace: Workspace) -> Path:
    return workspace.train("done")


@pytest.fixture
def untouched(workspace: Workspace, run_dir: Path):
    """Asserts after the test that no file under outputs/ changed or went away. A refused new run may leave a folder
    of its own that records the refusal (manifest `failed`, no metrics), as every failed run does."""
    outputs = workspace.root / "outputs"
    before = snapshot(outputs)
    yield
    after = snapshot(outputs)
    assert {path: after.get(path) for path in before} == before
    for manifest in {Path(path).parent for path in set(after) - set(before) if path.endswith("manifest.json")}:
        assert json.loads((manifest / "manifest.json").read_text())["status"] == "failed"
        assert not (manifest / "metrics.json").exists()


# -- genlab-train: settings -------------------------------------------------------------------------------------------

TRAIN_SETTINGS = {
    "a word for a number": (["model.latent_dim=abc"], "model.latent_dim='abc' is not allowed: expected an integer > 0"),
    "zero latent dimensions": (["model.latent_dim=0"], "model.latent_dim=0 is not allowed: expected an integer > 0"),
    "a negative learning rate": (["model.optimizer.lr=-1"], "model.optimizer: Invalid learning rate: -1"),
    "a word for the seed": (["seed=abc"], "seed='abc' is not allowed: expected an integer"),
    "a fractional batch size": (["data.batch_size=1.5"], "data.batch_size=1.5 is not allowed: expected an integer > 0"),
    "an unknown precision": (["trainer.precision=17"], "trainer.precision=17 is not allowed: expected one of 64, 32"),
    "an unknown likelihood": (["model.likelihood=poisson"], "expected one of 'bernoulli', 'gaussian'"),
    "a word for max_epochs": (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is not allowed"),
    "too few images for FID": (["metrics.num_real=1"], "metrics.num_real=1 is not allowed: expected an integer >= 2"),
    "an empty validation split": (["data.val_size=0"], "data.val_size=0 is not allowed"),
    "a GAN loss nobody wrote": (["model=gan", "model.loss=wasserstein"], "one of 'nonsaturating', 'hinge'"),
    "an EMA that never moves": (["model=gan", "model.ema_decay=1.0"], "model.ema_decay=1.0 is not allowed"),
    "an unknown tokenizer": (
        ["model=transformer", "data=python_source", "data.tokenizer=wordpiece"],
        "data.tokenizer='wordpiece' is not allowed: expected one of 'char', 'byte', 'bpe'",
    ),
    "a misspelt key": (["model.latnt_dim=3"], "(did you mean model.latent_dim?)"),
    "a misspelt group option": (["model=vea"], "(did you mean model=vae?); available options in 'model': diffusion,"),
    "a misspelt group": (["tranier.max_epochs=3"], "(did you mean trainer?)"),
    "override syntax": (["seed=[1"], "cannot parse the override 'seed=[1'"),
    "a top-level key genlab has not": (["+foo=1"], "foo is not a genlab-train setting"),
    "a setting the model has not": (["+model.latent_size=3"], "no setting latent_size (did you mean latent_dim?)"),
    "a size the model gives its net": (["+model.net.latent_dim=3"], "model.net.latent_dim is set by genlab itself"),
    "text data without a file": (["data=text_file", "model=transformer"], "data.path must be set"),
    "an empty text file": (["data=text_file", "data.path=empty.txt", "model=transformer"], "has no text to learn"),
    "a binary file as text": (["data=text_file", "data.path=binary.bin", "model=transformer"], "is not UTF-8 text"),
    "a dataset that is not here, downloads off": (
        ["data=mnist", "paths.data_dir=${hydra:runtime.cwd}/nowhere", "data.download=false"],
        "mnist is not in",
    ),
    "early stopping without validation": (
        ["callbacks=early_stopping", "trainer.limit_val_batches=0"],
        "callbacks.early_stopping stops on val/elbo, which trainer.limit_val_batches=0 never computes",
    ),
    "a min_lr above the lr": (["model=transformer", "data=python_source", "model.scheduler.min_lr=1"], "exceeds"),
}


@pytest.mark.parametrize("case", list(TRAIN_SETTINGS))
def test_a_bad_setting_is_one_line_before_anything_runs(workspace: Workspace, untouched, case: str) -> None:
    overrides, message = TRAIN_SETTINGS[case]
    runs = workspace.root / "outputs" / "train"
    before = set(runs.rglob("metrics.json")) if runs.exists() else set()
    refused(workspace.run("genlab-train", *TINY, *overrides), "genlab-train", message)
    after = set(runs.rglob("metrics.json")) if runs.exists() else set()
    assert after == before, "a refused run wrote metrics"
    assert not list(runs.rglob("*.ckpt")) if runs.exists() else True, "a refused run wrote checkpoints"


# -- genlab-train: run folders ----------------------------------------------------------------------------------------


def test_a_new_run_into_an_existing_run_folder_is_refused(workspace: Workspace, run_dir: Path, untouched) -> None:
    result = workspace.run("genlab-train", *VAE, "hydra.run.dir=outputs/done")
    refused(result, "genlab-train", "hydra.run.dir=outputs/done already holds a run; a new one would overwrite it")


def test_a_sweep_into_a_folder_holding_runs_is_refused(workspace: Workspace, run_dir: Path, untouched) -> None:
    result = workspace.run("genlab-train", "-m", *VAE, "seed=1,2", "hydra.sweep.dir=outputs")
    refused(result, "genlab-train", "hydra.sweep.dir=outputs already holds a run")


RESUME_REFUSALS = {
    "a setting that changes the model": (["model.latent_dim=3"], "model.latent_dim cannot change; allowed:"),
    "a wrong type for an allowed setting": (["trainer.max_epochs=abc"], "trainer.max_epochs='abc' is not allowed"),
    "resume inside a sweep": (["-m", "trainer.max_epochs=3,4"], "in a sweep (-m), resume=true continues the sweep"),
}


@pytest.mark.parametrize("case", list(RESUME_REFUSALS))
def test_a_refused_resume_changes_nothing(workspace: Workspace, run_dir: Path, untouched, case: str) -> None:
    arguments, message = RESUME_REFUSALS[case]
    refused(workspace.run("genlab-train", f"resume={run_dir}", *arguments), "genlab-train", message)


def test_resuming_a_run_that_is_being_written_names_the_writer(workspace: Workspace, run_dir: Path, untouched) -> None:
    import os

    with run_lock(run_dir):  # as a genlab-train still running in this folder holds it
        result = workspace.run("genlab-train", f"resume={run_dir}", "trainer.max_epochs=3")
    line = refused(result, "genlab-train", "is being written by another genlab-train (process")
    assert f"process {os.getpid()} on host" in line


def test_a_second_writer_of_a_run_folder_is_refused(run_dir: Path) -> None:
    with (
        run_lock(run_dir),
        pytest.raises(ConfigError, match="is being written by another genlab-train"),
        run_lock(run_dir),
    ):
        pass
    with run_lock(run_dir):  # released when the first one ended
        pass


BROKEN_FOLDERS = {
    "a truncated last checkpoint": (
        lambda folder: (folder / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 not a whole zip"),
        "is not a readable checkpoint (truncated",
    ),
    "a config that is not YAML": (
        lambda folder: (folder / ".hydra" / "config.yaml").write_text("model: [unclosed\n"),
        "config.yaml is not a readable config",
    ),
    "an empty config": (lambda folder: (folder / ".hydra" / "config.yaml").write_text(""), "config.yaml is empty"),
    "a config whose target writes files": (
        lambda folder: (folder / ".hydra" / "config.yaml").write_text(
            (folder / ".hydra" / "config.yaml").read_text().replace("genlab.models.vae.VAE", "pathlib.Path.touch")
        ),
        "model._target_='pathlib.Path.touch' is not something genlab builds from a run folder",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN_FOLDERS))
def test_resume_eval_and_sample_refuse_a_broken_folder(workspace: Workspace, run_dir: Path, case: str) -> None:
    damage, message = BROKEN_FOLDERS[case]
    folder = workspace.copy(run_dir, f"broken-{case.replace(' ', '-')}")
    damage(folder)
    before = snapshot(folder)
    commands = [
        ("genlab-train", [f"resume={folder}", "trainer.max_epochs=3"]),
        ("genlab-eval", [f"run={folder}", "ckpt=last"]),
        ("genlab-sample", [f"run={folder}", "ckpt=last", f"out={workspace.root / 'unused'}"]),
    ]
    for program, arguments in commands:
        refused(workspace.run(program, *arguments), program, message)
    assert snapshot(folder) == before


def test_a_hostile_config_is_refused_before_anything_is_built(workspace: Workspace, run_dir: Path) -> None:
    """`builtins.open(path, "w")` would truncate any file; Hydra's own blocklist lets it through."""
    folder = workspace.copy(run_dir, "hostile")
    victim = workspace.root / "precious.txt"
    victim.write_text("results")
    config = folder / ".hydra" / "config.yaml"
    saved = OmegaConf.load(config)
    saved.callbacks.stop_on_non_finite_loss = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    OmegaConf.save(saved, config)
    with pytest.raises(ConfigError, match=r"callbacks\.stop_on_non_finite_loss\._target_='builtins.open'"):
        genlab.load_run(folder, ckpt="last")
    assert victim.read_text() == "results"


OWN_CALLBACK = """
import pytorch_lightning as pl


class StopOnNonFiniteLoss(pl.Callback):
    def __init__(self, every_n_steps: int = 1) -> None:
        self.every_n_steps = every_n_steps
"""


def test_trusted_targets_can_be_extended_by_the_user(
    workspace: Workspace, run_dir: Path, monkeypatch, tmp_path: Path
) -> None:
    (tmp_path / "my_lab").mkdir()
    (tmp_path / "my_lab" / "__init__.py").write_text("")
    (tmp_path / "my_lab" / "callbacks.py").write_text(OWN_CALLBACK)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = workspace.copy(run_dir, "own-callback")
    config = folder / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("genlab.callbacks.finite_loss", "my_lab.callbacks"))
    with pytest.raises(ConfigError, match=r"my_lab\.callbacks\.StopOnNonFiniteLoss"):
        genlab.load_run(folder, ckpt="last")
    monkeypatch.setenv("GENLAB_TRUSTED_TARGETS", "my_lab.")
    assert genlab.load_run(folder, ckpt="last").model is not None  # callbacks are not built to load a model


# -- genlab-eval and genlab-sample ------------------------------------------------------------------------------------

COMMAND_REFUSALS = {
    "eval: another model for this run": ("genlab-eval", ["model=gan"], "a run's model settings cannot be swapped"),
    "eval: another dataset for this run": ("genlab-eval", ["data=mnist"], "a run's data settings cannot be swapped"),
    "eval: a setting the model has not": ("genlab-eval", ["+model.x=1"], "model has no setting x; VAE takes:"),
    "eval: a setting the run has not": ("genlab-eval", ["model.latnt_dim=3"], "(did you mean model.latent_dim?)"),
    "eval: a wrong type": ("genlab-eval", ["model.eval_iwae_k=many"], "model.eval_iwae_k='many' is not allowed"),
    "eval: a checkpoint that is not there": ("genlab-eval", ["ckpt=nowhere.ckpt"], "is not a file"),
    "eval: a misspelt setting of its own": ("genlab-eval", ["ckp=last"], "ckp is not a genlab-eval setting"),
    "eval: a word without a value": ("genlab-eval", ["last"], "'last' is not a setting; write key=value"),
    "sample: a word for n": ("genlab-sample", ["n=abc"], "n='abc' is not allowed: expected an integer > 0 or null"),
    "sample: no samples": ("genlab-sample", ["n=0"], "n=0 is not allowed"),
    "sample: a negative temperature": ("genlab-sample", ["temperature=-1"], "temperature=-1 is not allowed"),
    "sample: top_p above 1": ("genlab-sample", ["top_p=1.5"], "top_p=1.5 is not allowed"),
    "sample: a GPU this machine has not": ("genlab-sample", ["device=cuda:99"], "device=cuda:99:"),
    "sample: a device that does not exist": ("genlab-sample", ["device=banana"], "device=banana is not a device name"),
    "sample: a folder it cannot write": ("genlab-sample", ["out=/proc/genlab-samples"], "cannot write into /proc"),
    "sample: a misspelt seed": (
        "genlab-sample",
        ["sead=3"],
        "sead is not a genlab-sample setting (did you mean seed?)",
    ),
}


@pytest.mark.parametrize("case", list(COMMAND_REFUSALS))
def test_eval_and_sample_refuse_bad_arguments(workspace: Workspace, run_dir: Path, untouched, case: str) -> None:
    program, arguments, message = COMMAND_REFUSALS[case]
    refused(workspace.run(program, f"run={run_dir}", *arguments), program, message)


def test_samples_are_not_overwritten_without_asking(workspace: Workspace, run_dir: Path) -> None:
    out = workspace.root / "samples"
    assert workspace.run("genlab-sample", f"run={run_dir}", "n=4", f"out={out}").returncode == 0
    first = snapshot(out)
    refused(
        workspace.run("genlab-sample", f"run={run_dir}", "n=4", "seed=1", f"out={out}"),
        "genlab-sample",
        "overwrite=true",
    )
    assert snapshot(out) == first
    assert (
        workspace.run("genlab-sample", f"run={run_dir}", "n=4", "seed=1", f"out={out}", "overwrite=true").returncode
        == 0
    )
    assert snapshot(out) != first


def test_every_evaluation_is_kept(workspace: Workspace, run_dir: Path) -> None:
    folder = workspace.copy(run_dir, "evaluated")
    for arguments in (["ckpt=best"], ["ckpt=last", "model.eval_iwae_k=3"]):
        result = workspace.run("genlab-eval", f"run={folder}", *arguments)
        assert result.returncode == 0, result.stderr[-3000:]
    records = sorted((folder / "evals").glob("*.json"))
    assert len(records) == 2
    contents = [json.loads(p.read_text()) for p in records]
    assert {c["checkpoint"] for c in contents} == {
        "checkpoints/last.ckpt",
        json.loads((folder / "metrics.json").read_text())["checkpoint"],
    }
    latest = json.loads((folder / "eval.json").read_text())
    assert latest["overrides"] == ["model.eval_iwae_k=3"] and latest in contents


def test_compare_names_a_corrupt_file(workspace: Workspace, run_dir: Path) -> None:
    folder = workspace.copy(run_dir, "corrupt-metrics")
    (folder / "metrics.json").write_text('{"val/elbo": 1.0,')
    result = workspace.run("genlab-compare", str(folder), "--out", str(workspace.root / "report"))
    refused(result, "genlab-compare", f"{folder / 'metrics.json'} is not readable JSON")


def test_load_run_refuses_a_device_and_a_model_swap(run_dir: Path) -> None:
    with pytest.raises(ConfigError, match="device=cuda:99"):
        genlab.load_run(run_dir, device="cuda:99")
    with pytest.raises(ConfigError, match="a run's model settings cannot be swapped"):
        genlab.load_run(run_dir, overrides=["model=gan"])


# -- runs that skip a stage complete ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "skipped"),
    [
        (["trainer.limit_val_batches=0"], ["val"]),
        (["trainer.limit_test_batches=0"], ["test"]),
        (["test=false"], ["test"]),
    ],
    ids=["no validation", "no test batches", "test=false"],
)
def test_a_run_that_skips_a_stage_completes(workspace: Workspace, overrides: list[str], skipped: list[str]) -> None:
    folder = workspace.train(f"skip-{'-'.join(overrides).replace('=', '')}", *overrides)
    manifest = json.loads((folder / "manifest.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    assert manifest["status"] == "completed"
    assert metrics["not_evaluated"] == skipped
    assert not any(key.startswith(f"{skipped[0]}/") for key in metrics)
    assert (folder / metrics["checkpoint"]).is_file()
    result = workspace.run("genlab-eval", f"run={folder}")  # evaluates what the run evaluated
    assert result.returncode == 0, result.stderr[-3000:]


def test_a_test_split_shorter_than_one_block_is_caught_before_training(workspace: Workspace) -> None:
    overrides = ["model=transformer", "data=python_source", "data.max_chars=20000", "data.test_fraction=0.001"]
    result = workspace.run("genlab-train", *TINY, *overrides, "data.block_size=64", "model.net.n_layer=1")
    refused(result, "genlab-train", "data.block_size=64 is larger than the test text")


# -- the judged checkpoint --------------------------------------------------------------------------------------------


def test_the_best_checkpoint_does_not_depend_on_the_order_of_callbacks(tmp_path: Path) -> None:
    import pytorch_lightning as pl
    from pytorch_lightning.callbacks import ModelCheckpoint

    from genlab.callbacks.run_state import judged_checkpoint

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val/elbo", mode="min")
    last = ModelCheckpoint(dirpath=tmp_path, filename="last", monitor=None)
    trainer = pl.Trainer(callbacks=[last, best], logger=False, enable_progress_bar=False, accelerator="cpu")
    assert trainer.checkpoint_callback is last  # Lightning's choice: the first one
    assert judged_checkpoint(trainer, "val/elbo") is best


def test_checkpoint_state_of_a_moved_folder_points_at_its_new_place() -> None:
    from genlab.callbacks.run_state import relocate_checkpoint_state

    state = {
        "dirpath": "/old/run/checkpoints",
        "best_model_path": "/old/run/checkpoints/best-epoch001-step4.ckpt",
        "best_k_models": {"/old/run/checkpoints/best-epoch001-step4.ckpt": torch.tensor(3.0)},
        "last_model_path": "",
    }
    relocate_checkpoint_state(state, "/old/run/checkpoints", "/new/place/checkpoints")
    assert state["best_model_path"] == "/new/place/checkpoints/best-epoch001-step4.ckpt"
    assert list(state["best_k_models"]) == ["/new/place/checkpoints/best-epoch001-step4.ckpt"]
    assert state["dirpath"] == "/new/place/checkpoints" and state["last_model_path"] == ""


def test_a_copied_run_folder_resumes_from_its_own_checkpoints(workspace: Workspace, run_dir: Path) -> None:
    original = snapshot(run_dir)
    copy = workspace.copy(run_dir, "copied")
    result = workspace.run("genlab-train", f"resume={copy}", "trainer.max_epochs=4")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((copy / "metrics.json").read_text())
    assert (copy / metrics["checkpoint"]).is_file() and metrics["epoch"] >= 2
    assert snapshot(run_dir) == original, "resuming the copy wrote into the original"
