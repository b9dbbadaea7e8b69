"""privacy=dp: DP-SGD with Opacus through the real entrypoint; the epsilon a run reports is what Opacus' accountant
computes from the sample rate, noise and steps the run records; budgets, resume and bad settings."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import QUIET_TRAIN, TrainCall, run_dirs, train_env
from inprocess import call_entrypoint
from requires import extra_hint

pytest.importorskip("opacus", reason=extra_hint("privacy"))
from opacus.accountants import RDPAccountant

#: The digits, 5 private steps per epoch, no FID (memorization in pixel space only).
DP = [
    *QUIET_TRAIN,
    "privacy=dp",
    "data=digits",
    "debug=limit",
    "trainer.max_epochs=1",
    "metrics=none",
    "logger=csv",
    "callbacks.samples=null",
    "callbacks.memorization.num_samples=32",
    "callbacks.memorization.num_reference=64",
]
#: ... with a tiny VAE.
TINY_DP = [*DP, "model.net.hidden_dims=[16]", "model.latent_dim=4", "model.eval_iwae_k=0"]


def train(folder: Path, *overrides: str) -> TrainCall:
    log_dir = folder / "outputs"
    before = set(run_dirs(log_dir))
    result = call_entrypoint("genlab-train", list(overrides), cwd=folder, env=train_env(log_dir))
    return TrainCall(result, log_dir, before)


def recomputed(noise: float, sample_rate: float, steps: int, delta: float) -> float:
    accountant = RDPAccountant()
    accountant.history = [(noise, sample_rate, steps)]
    return accountant.get_epsilon(delta)


@pytest.fixture(scope="module")
def dp_run(tmp_path_factory) -> tuple[Path, TrainCall]:
    folder = tmp_path_factory.mktemp("dp")
    return folder, train(folder, *TINY_DP, "privacy.epsilon=null", "privacy.noise_multiplier=1.0").check()


def test_reported_epsilon_is_opacus_accounting_of_the_recorded_steps(dp_run) -> None:
    _, run = dp_run
    metrics = run.metrics
    record = metrics["privacy"]
    assert record["steps"] == metrics["global_step"] == 5
    assert record["noise_multiplier"] == 1.0 and record["accountant"] == "rdp" and record["poisson_sampling"]
    assert record["delta"] == pytest.approx(1 / round(1 / record["delta"]))  # 1 / (training examples)
    expected = recomputed(1.0, record["sample_rate"], record["steps"], record["delta"])
    assert record["epsilon"] == pytest.approx(expected, rel=1e-9)
    manifest = json.loads((run.dir / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["privacy"] == record
    # the image memorization metrics sit beside the numbers (pixel space: metrics=none has no feature net)
    assert 0 <= metrics["test/memorization_closer_to_train_pixels"] <= 1
    assert {"test/memorization_near_copy_share_pixels", "test/memorization_data_copying_ct_pixels"} <= set(metrics)


def test_the_gans_discriminator_trains_privately(tmp_path: Path) -> None:
    gan = ["model=gan", "model/net=mlp_gan", "metrics=sample_quality", "metrics.num_real=32", "metrics.num_fake=32"]
    run = train(tmp_path, *DP, *gan, "privacy.epsilon=null", "privacy.noise_multiplier=1.0").check()
    record = run.metrics["privacy"]
    assert record["steps"] == 5  # one private step per batch: the discriminator's (the generator's are not private)
    assert record["epsilon"] == pytest.approx(recomputed(1.0, record["sample_rate"], 5, record["delta"]), rel=1e-9)


def test_resume_continues_the_accounting(dp_run) -> None:
    folder, run = dp_run
    train(folder, f"resume={run.dir}", "trainer.max_epochs=2").check()
    record = json.loads((run.dir / "metrics.json").read_text())["privacy"]
    assert record["steps"] == 10
    assert record["epsilon"] == pytest.approx(recomputed(1.0, record["sample_rate"], 10, record["delta"]), rel=1e-9)


def test_a_run_that_would_exceed_its_budget_is_refused(tmp_path: Path) -> None:
    run = train(tmp_path, *TINY_DP, "privacy.epsilon=0.5", "privacy.noise_multiplier=0.5")
    assert run.returncode == 2
    line = run.stderr.strip().splitlines()[-1]
    assert "would spend epsilon" in line and "privacy.epsilon=0.5" in line
    assert not (run.dir / "metrics.json").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (["privacy.epsilon=0"], "privacy.epsilon=0 is not allowed: expected a number > 0"),
        (["privacy.delta=1.0"], "privacy.delta=1.0 is not allowed"),
        (["model=gan", "model/net=mlp_gan", "model.loss=wgan_gp", "metrics=sample_quality"], "gradient penalty"),
    ],
)
def test_bad_settings_are_one_line(tmp_path: Path, settings: list[str], message: str) -> None:
    run = train(tmp_path, *DP, *settings)
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert message in lines[-1], run.stderr[-2000:]


def test_a_net_with_batch_norm_is_refused_in_one_line() -> None:
    import pytorch_lightning as pl
    import torch

    from genlab.callbacks.privacy import DifferentialPrivacy
    from genlab.errors import ConfigError

    class Normed(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4))

    trainer = SimpleNamespace(world_size=1, accumulate_grad_batches=1)
    with pytest.raises(ConfigError, match=r"Opacus cannot compute per-example gradients .*BatchNorm.*model/net"):
        DifferentialPrivacy(epsilon=1.0).setup(trainer, Normed(), "fit")
