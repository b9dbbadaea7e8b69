"""The GAN: losses and penalties, nets sized from the data, manual optimization counted through the real loop,
EMA, resuming, precision, DDP, and bad input."""

from __future__ import annotations

import csv
import functools
import math
import re
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUIET_TRAIN
from pytorch_lightning.callbacks import ModelCheckpoint
from torch import nn

from genlab.data.digits import DigitsDataModule
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.models import gan as gan_module
from genlab.models.gan import GAN
from genlab.models.gan_losses import (
    LOSSES,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mode_seeking_penalty,
    r1_penalty,
)
from genlab.models.images import slerp
from genlab.nets.gan import DCGAN, MLPGAN

QUIET = [*QUIET_TRAIN]
# A GAN run on the digits: 5 batches per epoch for two epochs, small FID sample sets.
TINY_GAN = ["model=gan", "debug=limit", "metrics.num_real=64", "metrics.num_fake=64", *QUIET]

ADAM = functools.partial(torch.optim.Adam, lr=2e-4, betas=(0.5, 0.999))
HALVE_EACH_EPOCH = functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5)


def digits_gan(**kwargs) -> GAN:
    settings = dict(net=functools.partial(MLPGAN, hidden_dims=[32]), optimizer=ADAM, discriminator_optimizer=ADAM)
    return GAN(DigitsDataModule().spec, **{**settings, **kwargs})


@pytest.mark.parametrize("loss", LOSSES)
def test_losses_are_finite_and_push_the_right_way(loss: str) -> None:
    confident = discriminator_loss(loss, real=torch.full((8, 1), 3.0), fake=torch.full((8, 1), -3.0))
    fooled = discriminator_loss(loss, real=torch.full((8, 1), -3.0), fake=torch.full((8, 1), 3.0))
    assert math.isfinite(confident) and math.isfinite(fooled)
    assert confident < fooled, "D's loss must be lower when it tells real from fake"
    assert generator_loss(loss, torch.full((8, 1), 3.0)) < generator_loss(loss, torch.full((8, 1), -3.0))


def test_gradient_penalty_is_zero_for_a_1_lipschitz_critic_and_positive_for_a_steep_one() -> None:
    torch.manual_seed(0)
    real, fake = torch.rand(16, 1, 8, 8), torch.rand(16, 1, 8, 8)
    unit = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    with torch.no_grad():
        unit[1].weight.copy_(torch.randn(1, 64)).div_(unit[1].weight.norm())  # gradient norm exactly 1 everywhere
    assert gradient_penalty(unit, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    steep = nn.Sequential(nn.Flatten(), nn.Linear(64, 1))
    with torch.no_grad():
        steep[1].weight.copy_(unit[1].weight * 5)
    assert gradient_penalty(steep, real, fake).item() == pytest.approx(16.0, rel=1e-5)  # (5 - 1)^2
    assert r1_penalty(steep, real).item() == pytest.approx(25.0, rel=1e-5)  # ||grad||^2


def test_penalties_can_be_trained_through() -> None:
    critic = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.Tanh(), nn.Linear(8, 1))
    gradient_penalty(critic, torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)).backward()
    assert critic[1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


def test_mode_seeking_penalises_a_generator_that_ignores_its_noise() -> None:
    z, z_other = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.randn(8, 4)
    collapsed = torch.ones(8, 1, 2, 2)
    assert mode_seeking_penalty(collapsed, collapsed, z, z_other).item() == pytest.approx(1e5)
    # Images that move as far as their noises: a ratio of 1.
    assert mode_seeking_penalty(z.view(8, 1, 2, 2), z_other.view(8, 1, 2, 2), z, z_other).item() == pytest.approx(
        1.0, rel=1e-4
    )
    scale = torch.tensor(0.5, requires_grad=True)  # G(z) = scale * z: minimising the term makes G use z more
    mode_seeking_penalty(scale * z, scale * z_other, z, z_other).backward()
    assert scale.grad < 0


def test_slerp_keeps_its_ends_and_the_norm_of_orthogonal_unit_vectors() -> None:
    start, end = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    path = slerp(start, end, torch.linspace(0, 1, 5))
    assert torch.allclose(path[0, 0], start[0], atol=1e-6) and torch.allclose(path[0, -1], end[0], atol=1e-6)
    assert torch.allclose(path.norm(dim=-1), torch.ones(1, 5), atol=1e-6)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
@pytest.mark.parametrize("net", [DCGAN, functools.partial(DCGAN, d_norm="layer", spectral_norm=True), MLPGAN])
def test_nets_fit_every_standard_image_shape(shape, net) -> None:
    built = net(shape=shape, latent_dim=16)
    images = built.generator(torch.randn(3, 16))
    assert images.shape == (3, *shape) and images.abs().max() <= 1
    assert built.discriminator(images).shape == (3, 1)


@pytest.mark.parametrize("shape", [(1, 7, 7), (3, 32, 28), (1, 6, 6)])
def test_dcgan_refuses_shapes_it_cannot_take(shape) -> None:
    with pytest.raises(ConfigError, match="model/net=dcgan needs square images"):
        DCGAN(shape=shape, latent_dim=8)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.loss=wasserstein"], "model.loss='wasserstein' is not allowed: expected one of 'nonsaturating'"),
        (["model.n_critic=0"], "model.n_critic=0 is not allowed: expected an integer > 0"),
        (["model.mode_seeking_weight=-1"], "model.mode_seeking_weight=-1 is not allowed: expected a number >= 0"),
        (["model.ema_decay=1.0"], "model.ema_decay=1.0 is not allowed: expected a number >= 0 and < 1"),
        (["model.net.width=0"], "model.net.width=0 is not allowed: expected an integer > 0"),
        (["model.net.d_norm=instance"], "model.net.d_norm='instance' is not allowed: expected one of 'batch'"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_built(compose_config, overrides: list, message: str) -> None:
    from genlab.checks import check_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_config("model=gan", *overrides))


def test_a_vae_net_or_text_data_is_refused() -> None:
    from genlab.nets.mlp import MLPEncoderDecoder

    with pytest.raises(ConfigError, match="has no generator or discriminator"):
        digits_gan(net=MLPEncoderDecoder)
    with pytest.raises(Exception, match="GAN models image data"):
        GAN(DataSpec(kind="text", shape=(16,), vocab_size=10), MLPGAN, ADAM, ADAM)


def fit(model: GAN, tmp_path: Path, epochs: int, ckpt_path: str | None = None) -> pl.Trainer:
    trainer = pl.Trainer(
        max_epochs=epochs,
        limit_train_batches=6,
        limit_val_batches=1,
        callbacks=[ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return trainer


def adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"])


def test_ema_is_what_samples_and_differs_from_the_raw_generator(tmp_path: Path) -> None:
    pl.seed_everything(0)
    model = digits_gan(ema_decay=0.9)
    fit(model, tmp_path, epochs=1)
    raw = torch.cat([p.flatten() for p in model.generator.parameters()])
    ema = torch.cat([p.flatten() for p in model.generator_ema.module.parameters()])
    assert not torch.allclose(raw, ema), "EMA weights equal the raw generator after training"
    z = torch.randn(4, model.latent_dim, generator=torch.Generator().manual_seed(1))
    expected = ((model.generator_ema.module(z) + 1) / 2).clamp(0, 1)
    assert torch.allclose(model.sample(4, torch.Generator().manual_seed(1)), expected)


def test_gradient_clipping_bounds_each_networks_step() -> None:
    sgd = functools.partial(torch.optim.SGD, lr=1.0)
    model = digits_gan(optimizer=sgd, discriminator_optimizer=sgd, gradient_clip_val=1e-3, ema_decay=0.0)
    before = {name: p.detach().clone() for name, p in model.net.named_parameters()}
    trainer = pl.Trainer(
        max_steps=2, limit_val_batches=0, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=DigitsDataModule(batch_size=32))
    # One D step and one G step, each moving its network by lr x (a gradient clipped to norm 1e-3).
    for network in ("discriminator.", "generator."):
        moved = [
            (p.detach() - before[name]).flatten()
            for name, p in model.net.named_parameters()
            if name.startswith(network)
        ]
        assert 0 < torch.cat(moved).norm() <= 1e-3 * (1 + 1e-4), network


def test_resuming_restores_both_optimizers_schedulers_ema_and_the_step_counter(tmp_path: Path) -> None:
    pl.seed_everything(0)
    schedulers = {"scheduler": HALVE_EACH_EPOCH, "discriminator_scheduler": HALVE_EACH_EPOCH}
    fit(digits_gan(n_critic=2, **schedulers), tmp_path, epochs=2)
    saved = torch.load(tmp_path / "last.ckpt", weights_only=False)

    resumed = digits_gan(n_critic=2, **schedulers)
    trainer = fit(resumed, tmp_path / "again", epochs=2, ckpt_path=str(tmp_path / "last.ckpt"))
    assert trainer.global_step == saved["global_step"] == 2 * (6 + 3)  # D steps + G steps, 2 epochs
    g_optimizer, d_optimizer = trainer.optimizers
    assert (adam_steps(g_optimizer), adam_steps(d_optimizer)) == (6, 12)
    for optimizer, state in zip(trainer.optimizers, saved["optimizer_states"], strict=True):
        assert optimizer.state_dict()["param_groups"] == state["param_groups"]
    assert [c.scheduler.state_dict() for c in trainer.lr_scheduler_configs] == saved["lr_schedulers"]
    assert g_optimizer.param_groups[0]["lr"] == pytest.approx(2e-4 / 4)  # halved after each of 2 epochs
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, saved["state_dict"][name]), name
    assert any(name.startswith("generator_ema.") for name in saved["state_dict"])


def test_optimizer_steps_per_n_critic_through_the_entrypoint(genlab_train) -> None:
    run = genlab_train(*TINY_GAN, "model.n_critic=5", "model/net=mlp_gan").check()
    state = torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=False)
    g_state, d_state = state["optimizer_states"]
    # 2 epochs x 5 batches: a D step per batch, a G step every 5th batch.
    assert int(next(iter(d_state["state"].values()))["step"]) == 10
    assert int(next(iter(g_state["state"].values()))["step"]) == 2
    assert state["global_step"] == 12


@pytest.mark.parametrize(
    "settings",
    [
        ["model.loss=nonsaturating", "model.r1_weight=1"],
        ["model.loss=hinge", "model.net.spectral_norm=true"],
        ["model.loss=wgan_gp", "model.n_critic=2", "model.net.d_norm=layer"],
    ],
    ids=["nonsaturating+r1", "hinge+sn", "wgan_gp"],
)
def test_each_loss_trains_with_finite_values_and_fid(genlab_train, settings: list[str]) -> None:
    run = genlab_train(*TINY_GAN, *settings, "logger=csv").check()
    metrics = run.metrics
    assert metrics["judged_metric"] == "val/fid" and metrics["judged_mode"] == "min"
    for name in ("val/fid", "test/fid", "test/kid", "val/d_real", "val/d_fake"):
        assert math.isfinite(metrics[name]), name
    header = (run.dir / "csv" / "metrics.csv").read_text().splitlines()[0].split(",")
    for name in ("train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/d_grad_norm", "train/gp"):
        assert name in header, name
    assert (run.dir / "samples" / "samples.png").is_file() and (run.dir / "samples" / "interpolation.png").is_file()


def test_a_conditional_gan_with_mode_seeking_adds_the_term_at_every_generator_step(genlab_train, monkeypatch) -> None:
    calls = []
    penalty = gan_module.mode_seeking_penalty
    monkeypatch.setattr(gan_module, "mode_seeking_penalty", lambda *pair: calls.append(1) or penalty(*pair))
    run = genlab_train(*TINY_GAN, "model.conditional=true", "model.mode_seeking_weight=1").check()
    assert len(calls) == 10  # debug=limit: 2 epochs of 5 batches, a G step each
    assert math.isfinite(run.metrics["test/intra_fid"]) and math.isfinite(run.metrics["test/class_spread"])


def test_the_default_gan_learns_the_digits(genlab_train) -> None:
    run = genlab_train("model=gan", "trainer.max_epochs=10", "logger=csv", *QUIET).check()
    with open(run.dir / "csv" / "metrics.csv") as f:
        fids = [float(row["val/fid"]) for row in csv.DictReader(f) if row.get("val/fid")]
    assert len(fids) == 11, fids  # 10 epochs, then the best checkpoint once more
    # An untrained generator scores about 240 on these features; 10 epochs (about 110 G steps) reach about 35.
    assert fids[0] > 150 and min(fids[:10]) < 80, fids
    assert run.metrics["val/fid"] == pytest.approx(min(fids[:10]), rel=1e-6), "best checkpoint by val/fid"
    # Mode coverage: the generated digits spread over several classes (ln 10 = 2.30 for all ten, equally).
    assert run.metrics["test/class_entropy"] > 1.0


def test_bf16_mixed_and_ddp_runs_finish_with_finite_losses(genlab_train) -> None:
    # DDP starts worker processes that re-run the command: the process is the point there.
    for run in (
        genlab_train(*TINY_GAN, "trainer.precision=bf16-mixed"),
        genlab_train.process(*TINY_GAN, "trainer=ddp_sim"),
    ):
        run.check()
        assert len(run.new_dirs) == 1
        assert math.isfinite(run.metrics["val/fid"]) and math.isfinite(run.metrics["test/d_real"]), run.stderr[-2000:]


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["model.loss=wasserstein"], "model.loss='wasserstein' is not allowed: expected one of 'nonsaturating', "),
        (["model.n_critic=0"], "model.n_critic=0 is not allowed: expected an integer > 0"),
        (["model.mode_seeking_weight=-1"], "model.mode_seeking_weight=-1 is not allowed: expected a number >= 0"),
        (["metrics=none"], "model=GAN is judged by val/fid, which metrics=none turns off; keep metrics=sample_quality"),
        (["metrics.every_n_epochs=2"], "checkpoints select by val/fid, so it is needed every validation epoch"),
        (
            ["data=image_folder", "data.path=.", "data.image_size=15"],
            "model/net=dcgan needs square images whose side halves at least once to 4 px or more",
        ),
    ],
)
def test_bad_gan_settings_are_one_line_errors(genlab_train, overrides: list[str], line: str) -> None:
    run = genlab_train("model=gan", *overrides)
    assert run.returncode == 2
    (error,) = run.stderr.strip().splitlines()
    assert error.startswith(f"genlab-train: error: {line}")
    assert not run.new_dirs or not list(run.dir.glob("checkpoints/*")), "a refused run must not write checkpoints"
