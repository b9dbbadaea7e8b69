"""The run folder is the unit: resume it (also after SIGTERM or SIGKILL), evaluate it, sample from it, load it."""

from __future__ import annotations

import hashlib
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import CELL, QUIET_TRAIN, TINY_LM_NET, train_env
from inprocess import Result, call_entrypoint, console_script
from omegaconf import OmegaConf

import genlab
from genlab.errors import ConfigError
from genlab.run.checkpoint_io import RunCheckpointIO
from genlab.sample import main as sample_main

GENLAB_TRAIN, GENLAB_EVAL, GENLAB_SAMPLE = "genlab-train", "genlab-eval", "genlab-sample"

QUIET = [*QUIET_TRAIN, "metrics=none"]
# One training batch and one validation batch per epoch: a SIGTERM always stops a run between epochs.
VAE = [
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=1",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "model.eval_iwae_k=5",
    "callbacks.samples.every_n_epochs=1000",
    *QUIET,
]
LM = [
    *TINY_LM_NET,
    "data.steps_per_epoch=3",
    "model.sample_tokens=8",
    "trainer.max_epochs=2",
    "trainer.limit_test_batches=2",
    "trainer.accelerator=cpu",
    *QUIET,
]

# The GAN with its judged val/fid on small sample sets; two batches per epoch, deterministic.
GAN = [
    "model=gan",
    "model/net=mlp_gan",
    "model.net.hidden_dims=[32]",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "metrics.num_real=64",
    "metrics.num_fake=64",
    "callbacks.samples.every_n_epochs=1000",
    *QUIET[:2],
]

# The diffusion model with its judged val/fid: a UNet of 8 channels, few sampler steps, small sample sets; two
# batches per epoch, deterministic.
DIFFUSION = [
    "model=diffusion",
    "model.net.channels=8",
    "model.net.num_res_blocks=1",
    "model.timesteps=50",
    "model.sample_steps=4",
    "model.eval_steps=2",
    "model.bpd_timesteps=3",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=32",
    "metrics.num_real=32",
    "metrics.num_fake=32",
    "metrics.kid_subset_size=16",
    "callbacks.samples.every_n_epochs=1000",
    *QUIET[:2],
]


class Folder:
    """A scratch folder in which the console scripts run as a user would run them (called in this process; `start`
    starts a process, for tests of signals)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = train_env(root / "outputs")

    def command(self, program: str, *arguments: str, check: bool = True, **env: str) -> Result:
        process = call_entrypoint(program, arguments, cwd=self.root, env={**self.env, **env})
        if check:
            assert process.returncode == 0, f"{program} {arguments} failed:\n{process.stdout[-2000:]}{process.stderr}"
        return process

    def train(self, name: str, *overrides: str, **env: str) -> Path:
        self.command(GENLAB_TRAIN, *overrides, f"hydra.run.dir=outputs/{name}", **env)
        return self.root / "outputs" / name

    def start(self, name: str, *overrides: str) -> subprocess.Popen:
        return subprocess.Popen(
            [console_script(GENLAB_TRAIN), *overrides, f"hydra.run.dir=outputs/{name}"],
            cwd=self.root,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )


def metrics(run_dir: Path, name: str = "metrics.json") -> dict:
    return json.loads((run_dir / name).read_text())


def manifest(run_dir: Path) -> dict:
    return json.loads((run_dir / "manifest.json").read_text())


def numbers(content: dict) -> dict[str, float]:
    return {key: value for key, value in content.items() if "/" in key}


def error_line(process: Result, program: str) -> str:
    assert process.returncode == 2, process.stderr[-3000:]
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    (line,) = [line for line in process.stderr.splitlines() if line.startswith(f"{program}: error:")]
    return line


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Folder:
    return Folder(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def vae_run(folder: Folder) -> Path:
    """A finished 12-epoch VAE run: the reference every interrupted-and-resumed run must match exactly."""
    return folder.train("vae", *VAE, "trainer.max_epochs=12")


@pytest.fixture(scope="module")
def lm_run(folder: Folder) -> Path:
    return folder.train("lm", *LM, "data=python_source", "data.max_chars=20000")


@pytest.fixture(scope="module")
def gan_run(folder: Folder) -> Path:
    return folder.train("gan", *GAN, "trainer.max_epochs=4")


@pytest.fixture(scope="module")
def diffusion_run(folder: Folder) -> Path:
    return folder.train("diffusion", *DIFFUSION, "trainer.max_epochs=3")


# -- resume -----------------------------------------------------------------------------------------------------------


def test_resume_continues_in_place_and_ends_where_an_unbroken_run_ends(folder: Folder, vae_run: Path) -> None:
    part = folder.train("part", *VAE, "trainer.max_epochs=5")
    before = set((folder.root / "outputs").iterdir())
    events_before = set((part / "tensorboard").glob("events.out.tfevents.*"))
    folder.command(GENLAB_TRAIN, f"resume={part}", "trainer.max_epochs=12")

    assert numbers(metrics(part)) == numbers(metrics(vae_run))  # bit for bit: same weights, data order and noise
    assert metrics(part)["checkpoint"] == metrics(vae_run)["checkpoint"]
    assert set((folder.root / "outputs").iterdir()) == before, "resume= made a new run folder"
    saved = OmegaConf.load(part / ".hydra" / "config.yaml")
    assert saved.trainer.max_epochs == 12 and "${hydra:runtime.output_dir}" in (part / ".hydra/config.yaml").read_text()
    record = manifest(part)
    assert record["status"] == "completed"
    assert [r["previous_status"] for r in record["resumes"]] == ["completed"]
    assert record["resumes"][0]["overrides"] == [f"resume={part}", "trainer.max_epochs=12"]
    events_after = set((part / "tensorboard").glob("events.out.tfevents.*"))
    assert events_before < events_after, "TensorBoard did not go on writing into the run's own folder"
    assert [p.name for p in part.iterdir() if p.name.startswith(("tensorboard", "lightning_logs", "version_"))] == [
        "tensorboard"
    ]


def test_a_resumed_gan_ends_where_an_unbroken_one_ends(folder: Folder, gan_run: Path) -> None:
    """Both optimizers, both schedulers' states, the EMA generator and the step counter come back."""
    part = folder.train("gan_part", *GAN, "trainer.max_epochs=2")
    folder.command(GENLAB_TRAIN, f"resume={part}", "trainer.max_epochs=4")

    assert numbers(metrics(part)) == numbers(metrics(gan_run))
    assert math.isfinite(metrics(part)["val/fid"]) and metrics(part)["global_step"] == metrics(gan_run)["global_step"]
    resumed = torch.load(part / "checkpoints" / "last.ckpt", weights_only=True)
    unbroken = torch.load(gan_run / "checkpoints" / "last.ckpt", weights_only=True)
    for name, value in unbroken["state_dict"].items():
        assert torch.equal(resumed["state_dict"][name], value), name


def test_a_resumed_diffusion_model_ends_where_an_unbroken_one_ends(folder: Folder, diffusion_run: Path) -> None:
    """The net, its EMA, the optimizer and the random states come back: the same FID, loss and bound."""
    part = folder.train("diffusion_part", *DIFFUSION, "trainer.max_epochs=1")
    folder.command(GENLAB_TRAIN, f"resume={part}", "trainer.max_epochs=3")

    assert numbers(metrics(part)) == numbers(metrics(diffusion_run))
    assert math.isfinite(metrics(part)["test/bpd"]) and metrics(part)["global_step"] == 6


@pytest.mark.parametrize("kill", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killed_run_resumes_to_the_same_metrics(folder: Folder, vae_run: Path, kill: signal.Signals) -> None:
    name = f"killed_{kill.name}"
    process = folder.start(name, *VAE, "trainer.max_epochs=12")
    last = folder.root / "outputs" / name / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while not last.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(kill)
    _, stderr = process.communicate(timeout=120)
    run_dir = last.parents[1]
    stopped_at = torch.load(last, weights_only=True)["epoch"]
    assert stopped_at < 12, f"the run ended before it was killed: {stderr[-2000:]}"
    if kill == signal.SIGTERM:
        assert process.returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert manifest(run_dir)["status"] == "interrupted"
    else:
        assert manifest(run_dir)["status"] == "running"  # nobody was left to record the end
    assert not list(last.parent.glob(".*.tmp")), "a partial checkpoint was left behind"

    folder.command(GENLAB_TRAIN, f"resume={run_dir}")

    assert numbers(metrics(run_dir)) == numbers(metrics(vae_run))
    assert manifest(run_dir)["status"] == "completed"
    previous = "interrupted" if kill == signal.SIGTERM else "running"
    assert manifest(run_dir)["resumes"][0]["previous_status"] == previous


# -- evaluate ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("run_fixture", ["vae_run", "gan_run", "diffusion_run", "lm_run"])
def test_eval_reproduces_the_run_metrics(folder: Folder, run_fixture: str, request) -> None:
    run_dir = request.getfixturevalue(run_fixture)
    process = folder.command(GENLAB_EVAL, f"run={run_dir}")

    evaluated = metrics(run_dir, "eval.json")
    assert numbers(evaluated) == numbers(metrics(run_dir))
    assert evaluated["checkpoint"] == metrics(run_dir)["checkpoint"] and evaluated["overrides"] == []
    assert "val/" in process.stdout and "evals/" in process.stdout


def test_eval_applies_settings_of_the_run_config(folder: Folder, vae_run: Path) -> None:
    folder.command(GENLAB_EVAL, f"run={vae_run}", "ckpt=last", "model.eval_iwae_k=50")

    evaluated = metrics(vae_run, "eval.json")
    assert evaluated["overrides"] == ["model.eval_iwae_k=50"]
    assert evaluated["checkpoint"] == "checkpoints/last.ckpt" and evaluated["epoch"] == 11
    assert evaluated["test/nll_iwae"] != metrics(vae_run)["test/nll_iwae"]


# -- sample -----------------------------------------------------------------------------------------------------------


def test_sample_writes_image_grids_and_the_same_seed_the_same_bytes(folder: Folder, vae_run: Path) -> None:
    folder.command(GENLAB_SAMPLE, f"run={vae_run}", "n=16")
    folder.command(GENLAB_SAMPLE, f"run={vae_run}", "n=16", "out=again")

    default, again = vae_run / "generated", folder.root / "again"
    names = {"samples.png", "reconstructions.png", "interpolation.png"}
    assert {p.name for p in default.iterdir()} == names
    for name in names:
        assert (default / name).read_bytes() == (again / name).read_bytes(), name
    assert (default / "samples.png").read_bytes() != (default / "reconstructions.png").read_bytes()
    from PIL import Image

    assert Image.open(default / "samples.png").size == (4 * CELL + 2, 4 * CELL + 2)  # 4 x 4 digits at 64 px, padding 2


def test_sample_draws_from_the_gans_ema_generator(folder: Folder, gan_run: Path) -> None:
    folder.command(GENLAB_SAMPLE, f"run={gan_run}", "n=16", "seed=3")
    folder.command(GENLAB_SAMPLE, f"run={gan_run}", "n=16", "seed=3", "out=gan_again")

    default, again = gan_run / "generated", folder.root / "gan_again"
    assert {p.name for p in default.iterdir()} == {"samples.png", "interpolation.png"}
    for name in ("samples.png", "interpolation.png"):
        assert (default / name).read_bytes() == (again / name).read_bytes(), name


def test_sample_takes_the_diffusion_samplers_settings(folder: Folder, diffusion_run: Path) -> None:
    options = ["n=4", "seed=1", "steps=3", "sampler=ddpm"]
    folder.command(GENLAB_SAMPLE, f"run={diffusion_run}", *options)
    folder.command(GENLAB_SAMPLE, f"run={diffusion_run}", *options, "out=diffusion_again")
    folder.command(GENLAB_SAMPLE, f"run={diffusion_run}", "n=4", "seed=1", "out=diffusion_default")

    default, again = diffusion_run / "generated", folder.root / "diffusion_again"
    names = {"samples.png", "trajectory.png", "interpolation.png"}
    assert {p.name for p in default.iterdir()} == names
    for name in names:
        assert (default / name).read_bytes() == (again / name).read_bytes(), name
    # The run's own sampler (ddim) and sample_steps (4) draw other images from the same seed.
    assert (default / "samples.png").read_bytes() != (folder.root / "diffusion_default" / "samples.png").read_bytes()


@pytest.mark.parametrize(
    ("run_fixture", "option", "line"),
    [
        ("diffusion_run", "sampler=euler", "sampler='euler' is not a sampler of model.objective=eps"),
        ("diffusion_run", "steps=51", "steps=51 is more than the 50 steps of the noise schedule (model.timesteps)"),
        ("vae_run", "steps=50", "steps=50 does not apply to VAE, whose sampling takes no steps; leave it out"),
        ("vae_run", "guidance=2", "guidance=2 does not apply to VAE, whose sampling takes no guidance; leave it out"),
        ("diffusion_run", "guidance=2", "this diffusion model is unconditional: guidance=2 steers a class-conditional"),
    ],
)
def test_sampler_settings_that_cannot_apply(folder: Folder, run_fixture: str, option: str, line: str, request) -> None:
    run_dir = request.getfixturevalue(run_fixture)
    process = folder.command(GENLAB_SAMPLE, f"run={run_dir}", option, "out=refused", check=False)
    assert line in error_line(process, "genlab-sample")


def test_sample_writes_text_without_the_corpus(folder: Folder) -> None:
    corpus = folder.root / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 300)
    run_dir = folder.train("lm_file", *LM, "data=text_file", f"data.path={corpus}")
    corpus.unlink()  # the checkpoint carries the tokenizer and the data spec
    arguments = [f"run={run_dir}", "n=2", "prompt='def f'", "max_new_tokens=20", "top_k=5", "top_p=0.9"]
    folder.command(GENLAB_SAMPLE, *arguments)
    folder.command(GENLAB_SAMPLE, *arguments, "out=text_again")

    for i in range(2):
        text = (run_dir / "generated" / f"text_{i:03d}.txt").read_text()
        assert text.startswith("def f") and len(text) == len("def f") + 20  # one character per token (char)
        assert text == (folder.root / "text_again" / f"text_{i:03d}.txt").read_text()
    assert (run_dir / "generated" / "text_000.txt").read_text() != (run_dir / "generated" / "text_001.txt").read_text()


def test_load_run_gives_config_metrics_manifest_and_a_model_ready_to_sample(vae_run: Path) -> None:
    run = genlab.load_run(vae_run, ckpt="last")

    assert run.config.model.latent_dim == 16 and run.metrics == metrics(vae_run) and run.manifest["status"]
    assert run.checkpoint == vae_run / "checkpoints" / "last.ckpt" and run.epoch == 11
    assert not run.model.training and run.model.device.type == "cpu"
    first = run.model.sample(4, torch.Generator().manual_seed(0))
    assert first.shape == (4, 1, 8, 8) and torch.equal(first, run.model.sample(4, torch.Generator().manual_seed(0)))
    assert not torch.equal(first, run.model.sample(4, torch.Generator().manual_seed(1)))


# -- failures and bad input -------------------------------------------------------------------------------------------

POISON = '''
import hashlib, json
from pathlib import Path
import pytorch_lightning as pl
import torch

class PoisonWeights(pl.Callback):
    """At the start of epoch 2, record the checkpoints' checksums, then make every weight NaN."""

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            folder = Path(trainer.checkpoint_callback.dirpath)
            sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.ckpt")}
            (folder.parent / "before_poison.json").write_text(json.dumps(sums))
            with torch.no_grad():
                for parameter in pl_module.parameters():
                    parameter.fill_(float("nan"))
'''


def test_failed_run_is_recorded_and_keeps_its_best_checkpoint(folder: Folder) -> None:
    (folder.root / "poison.py").write_text(POISON)
    overrides = [*VAE, "trainer.max_epochs=4", "+callbacks.poison._target_=poison.PoisonWeights"]
    process = folder.command(
        GENLAB_TRAIN, *overrides, "hydra.run.dir=outputs/failed", check=False, PYTHONPATH=str(folder.root)
    )
    run_dir = folder.root / "outputs" / "failed"

    line = error_line(process, "genlab-train")
    assert "train/loss became nan at step" in line and "(batch 0 of epoch 2)" in line
    record = manifest(run_dir)
    assert record["status"] == "failed" and "train/loss became nan" in record["error"] and record["ended_at"]
    before = json.loads((run_dir / "before_poison.json").read_text())
    (best,) = [name for name in before if name.startswith("best")]
    assert {p.name: sha256(p) for p in (run_dir / "checkpoints").glob("*.ckpt")} == before
    weights = torch.load(run_dir / "checkpoints" / best, weights_only=True)["state_dict"]
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_not_a_run_folder(folder: Folder, tmp_path: Path) -> None:
    line = error_line(folder.command(GENLAB_EVAL, f"run={tmp_path}", check=False), "genlab-eval")
    assert f"run={tmp_path} is not a run folder (has no .hydra/config.yaml)" in line
    missing = tmp_path / "missing"
    line = error_line(folder.command(GENLAB_TRAIN, f"resume={missing}", check=False), "genlab-train")
    assert f"resume={missing} is not a run folder (does not exist)" in line
    assert not missing.exists(), "resume= created the folder it was asked to continue"


def test_unsafe_override_on_resume(folder: Folder, vae_run: Path) -> None:
    before = (vae_run / ".hydra" / "config.yaml").read_text()
    process = folder.command(GENLAB_TRAIN, f"resume={vae_run}", "model.latent_dim=3", check=False)

    line = error_line(process, "genlab-train")
    assert "model.latent_dim cannot change; allowed: trainer.max_epochs," in line
    assert (vae_run / ".hydra" / "config.yaml").read_text() == before


def test_corrupt_and_foreign_checkpoints(folder: Folder, vae_run: Path, lm_run: Path, tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((vae_run / "checkpoints" / "last.ckpt").read_bytes()[:4000])
    line = error_line(folder.command(GENLAB_EVAL, f"run={vae_run}", f"ckpt={truncated}", check=False), "genlab-eval")
    assert f"ckpt={truncated} is not a readable checkpoint (truncated" in line

    foreign = vae_run / "checkpoints" / "last.ckpt"
    line = error_line(folder.command(GENLAB_SAMPLE, f"run={lm_run}", f"ckpt={foreign}", check=False), "genlab-sample")
    assert "holds a genlab.models.vae.VAE, but this run's model is a genlab.models.lm.TransformerLM" in line


def test_checkpoints_that_do_not_load_as_plain_data_or_do_not_fit(vae_run: Path, tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe.ckpt"
    torch.save({"state_dict": {}, "payload": Path("x")}, unsafe)  # an object torch.load(weights_only=True) refuses
    with pytest.raises(ConfigError, match=r"could not be read as plain data \(Unsupported global: GLOBAL pathlib"):
        genlab.load_run(vae_run, ckpt=str(unsafe))
    with pytest.raises(ConfigError, match=r"does not fit this run's model \(genlab.models.vae.VAE\): size mismatch"):
        genlab.load_run(vae_run, overrides=["model.latent_dim=3"])
    with pytest.raises(ConfigError, match=r"model.latnt_dim is not a setting of this run's config"):
        genlab.load_run(vae_run, overrides=["model.latnt_dim=3"])


def test_checkpoint_write_that_fails_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "last.ckpt"
    io = RunCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
    good = path.read_bytes()

    with pytest.raises(Exception):  # noqa: B017 - whatever pickling raises for a lambda
        io.save_checkpoint({"state_dict": {}, "broken": lambda: None}, path)

    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_help_shows_the_settings(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sys, "argv", ["genlab-sample", "--help"])
    sample_main()
    assert "genlab-sample run=RUN_DIR [n=64]" in capsys.readouterr().out
