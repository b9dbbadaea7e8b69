"""`steps_per_execution=K`: K optimizer steps per Lightning step, through genlab-train, with the same weights, logged
values, step counts and resumption as one step per Lightning step (genlab.models.executions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import QUIET_TRAIN, TINY_LM_NET

#: A digits VAE with everything a Lightning step does besides the step itself: gradient clipping, accumulation (an
#: odd number of batches per epoch, so each epoch ends in a short accumulation and a short block), a per-step
#: learning-rate schedule, the learning-rate monitor, per-step training values in a CSV log, validation, checkpoints.
VAE_RUN = [
    "data=digits",
    "model=vae",
    "data.batch_size=60",
    "trainer.max_epochs=2",
    "metrics=none",
    "callbacks.memorization=null",
    "callbacks.samples=null",
    "logger=csv",
    "trainer.log_every_n_steps=2",
    "trainer.gradient_clip_val=0.05",
    "trainer.accumulate_grad_batches=2",
    "+model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 3, gamma: 0.7}",
    "model.scheduler_interval=step",
    *QUIET_TRAIN,
]


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)


def assert_same_weights(a: dict, b: dict, global_step: int | None = None) -> None:
    """Two checkpoints at the same step (`global_step` when given) with bit-identical weights."""
    assert a["global_step"] == b["global_step"]
    if global_step is not None:
        assert a["global_step"] == global_step
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def last_checkpoints(genlab_train, overrides: list[str], steps_per_execution: int) -> tuple[dict, dict]:
    """The last checkpoints of a run of `overrides` at K = 1 and at K = `steps_per_execution`."""
    one = genlab_train(*overrides).check()
    several = genlab_train(*overrides, f"steps_per_execution={steps_per_execution}").check()
    return last_checkpoint(one.dir), last_checkpoint(several.dir)


def assert_same_training(one: Path, several: Path) -> None:
    """Bit-identical weights and optimizer state, the same counters, and the same logged values at the same steps."""
    a, b = last_checkpoint(one), last_checkpoint(several)
    assert a["epoch"] == b["epoch"]
    assert_same_weights(a, b)
    moments_a = a["optimizer_states"][0]["state"]
    moments_b = b["optimizer_states"][0]["state"]
    assert all(torch.equal(moments_a[i]["exp_avg"], moments_b[i]["exp_avg"]) for i in moments_a)
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert (one / "csv" / "metrics.csv").read_text() == (several / "csv" / "metrics.csv").read_text()


@pytest.fixture(scope="module")
def one_step_vae(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import train_env
    from inprocess import call_entrypoint

    folder = tmp_path_factory.mktemp("one-step")
    result = call_entrypoint(
        "genlab-train", [*VAE_RUN, f"hydra.run.dir={folder / 'run'}"], cwd=folder, env=train_env(folder)
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return folder / "run"


def test_several_steps_per_lightning_step_train_the_same_vae(genlab_train, one_step_vae: Path) -> None:
    run = genlab_train(*VAE_RUN, "steps_per_execution=3").check()
    assert_same_training(one_step_vae, run.dir)
    steps = last_checkpoint(run.dir)["global_step"]
    assert steps == 24  # 2 epochs of 23 batches of 60 digits (1374), 2 a step and the last alone
    assert run.metrics["val/elbo"] == json.loads((one_step_vae / "metrics.json").read_text())["val/elbo"]


def test_a_run_resumed_between_epochs_goes_on_as_if_never_stopped(genlab_train, one_step_vae: Path) -> None:
    first = genlab_train(*VAE_RUN, "steps_per_execution=4", "trainer.max_epochs=1").check()
    genlab_train(f"resume={first.dir}", "trainer.max_epochs=2", *QUIET_TRAIN).check()
    assert_same_weights(last_checkpoint(one_step_vae), last_checkpoint(first.dir))


def test_max_steps_stops_inside_a_block_and_the_ema_follows_every_step(genlab_train) -> None:
    """A diffusion model (its EMA is updated in its optimizer_step) stopped by max_steps in the middle of a block."""
    diffusion = [
        "data=digits",
        "model=diffusion",
        "model.net.channels=8",
        "model.net.num_res_blocks=1",
        "model.timesteps=50",
        "model.sample_steps=4",
        "model.eval_steps=2",
        "model.ema_decay=0.9",
        "trainer.max_steps=7",
        "trainer.limit_val_batches=1",
        "data.eval_batch_size=32",
        "metrics.num_real=32",
        "metrics.num_fake=32",
        "metrics.kid_subset_size=16",
        "test=false",
        "callbacks.memorization=null",
        "callbacks.samples=null",
        *QUIET_TRAIN,
    ]
    a, b = last_checkpoints(genlab_train, diffusion, 4)
    assert any(key.startswith("net_ema.") for key in a["state_dict"])
    assert_same_weights(a, b, global_step=7)


def test_a_language_model_on_text_windows_trains_the_same(genlab_train) -> None:
    """Text data draws its windows with a sampler of its own; the warm-up schedule steps every optimizer step."""
    lm = [
        "data=shakespeare",
        *TINY_LM_NET,
        "data.steps_per_epoch=10",
        "trainer.max_epochs=1",
        "model.scheduler.warmup_steps=4",
        "metrics=none",
        "test=false",
        "callbacks.memorization=null",
        "callbacks.samples=null",
        *QUIET_TRAIN,
    ]
    assert_same_weights(*last_checkpoints(genlab_train, lm, 4), global_step=10)


def test_a_gan_with_several_critic_steps_trains_the_same(genlab_train) -> None:
    """The GAN steps its two optimizers itself: each batch of a block is its own training step, with the batch index
    that decides its generator steps (n_critic=2), its clipping, per-step schedules and logged values as with K = 1."""
    gan = [
        "data=digits",
        "model=gan",
        "data.batch_size=60",
        "trainer.max_epochs=1",
        "model.n_critic=2",
        "model.gradient_clip_val=0.5",
        "+model.scheduler={_target_: torch.optim.lr_scheduler.StepLR, _partial_: true, step_size: 3, gamma: 0.7}",
        "model.scheduler_interval=step",
        "metrics.num_real=32",
        "metrics.num_fake=32",
        "metrics.kid_subset_size=16",
        "trainer.limit_val_batches=1",
        "test=false",
        "callbacks.memorization=null",
        "callbacks.samples=null",
        "logger=csv",
        "trainer.log_every_n_steps=2",
        *QUIET_TRAIN,
    ]
    one = genlab_train(*gan).check()
    several = genlab_train(*gan, "steps_per_execution=3").check()
    a, b = last_checkpoint(one.dir), last_checkpoint(several.dir)
    assert_same_weights(a, b, global_step=23 + 11)  # 23 critic steps, a generator step every second batch
    assert a["lr_schedulers"] == b["lr_schedulers"]
    assert (one.dir / "csv" / "metrics.csv").read_text() == (several.dir / "csv" / "metrics.csv").read_text()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["steps_per_execution=0"], "steps_per_execution"),
        (["steps_per_execution=two"], "steps_per_execution"),
        (
            ["model=gan", "steps_per_execution=2", "trainer.accumulate_grad_batches=2"],
            "trainer.accumulate_grad_batches=2 does not apply to GAN",
        ),
        (["privacy=dp", "steps_per_execution=2"], "cannot go with privacy=dp"),
        (
            ["+callbacks.model_checkpoint.every_n_train_steps=10", "steps_per_execution=2"],
            "callbacks.model_checkpoint.every_n_train_steps=10 counts Lightning steps",
        ),
    ],
)
def test_what_it_cannot_go_with_is_one_line(genlab_train, overrides: list[str], message: str) -> None:
    run = genlab_train("data=digits", "trainer.max_epochs=1", *overrides, *QUIET_TRAIN)
    assert run.returncode == 2
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], run.stderr[-2000:]
