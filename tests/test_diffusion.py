"""The diffusion model: noise schedules against their closed forms, objectives, samplers (shapes, determinism, the
deterministic path, DDPM's algorithm), the variational bound, the UNet, training through genlab-train for each
objective, and bad settings."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from conftest import QUIET_TRAIN

from genlab.data.digits import DigitsDataModule
from genlab.errors import ConfigError
from genlab.metrics.likelihood import discretized_gaussian_log_likelihood
from genlab.models.diffusion import Diffusion
from genlab.models.diffusion_bound import negative_elbo, strata
from genlab.models.diffusion_paths import LinearPath, NoiseSchedule, estimates, noisy, target
from genlab.models.diffusion_samplers import DDIM, Euler
from genlab.nets.unet import UNet

QUIET = [*QUIET_TRAIN]
#: A diffusion run on the digits small enough for a test: a UNet of 8 channels, 2 training batches per epoch for
#: two epochs, few sampler steps, small sample sets, small evaluation batches.
TINY_DIFFUSION = [
    "model=diffusion",
    "model.net.channels=8",
    "model.net.num_res_blocks=1",
    "model.timesteps=50",
    "model.sample_steps=4",
    "model.eval_steps=2",
    "model.bpd_timesteps=3",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=32",
    "metrics.num_real=32",
    "metrics.num_fake=32",
    "metrics.kid_subset_size=16",
    *QUIET,
]

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
TINY_UNET = functools.partial(UNet, channels=8, num_res_blocks=1)


def digits_diffusion(**kwargs) -> Diffusion:
    """A tiny model without EMA whose weights are seeded and jittered: an untrained UNet's zero output layer would
    make every sampler give the same (clipped) images, and an unseeded one depends on the tests run before it (most
    of its pixels clip, so some draws make two samplers agree)."""
    settings = {"net": TINY_UNET, "optimizer": ADAM, "timesteps": 20, "sample_steps": 5, "eval_steps": 3}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Diffusion(DigitsDataModule().spec, **{**settings, "ema_decay": 0.0, **kwargs}).eval()
    jitter = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=jitter))
    return model


# -- schedules and objectives -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("timesteps", [1000, 40])
def test_linear_alpha_bar_is_the_product_of_its_betas(timesteps: int) -> None:
    schedule = NoiseSchedule("linear", timesteps)
    scale = 1000 / timesteps
    start, end = 1e-4 * scale, 0.02 * scale

    def alpha_bar(t: int) -> float:
        return math.prod(1 - (start + (end - start) * (i - 1) / (timesteps - 1)) for i in range(1, t + 1))

    for t in (0, 1, 2, timesteps // 2, timesteps - 1, timesteps):
        assert schedule.alpha_bars[t].item() == pytest.approx(alpha_bar(t), rel=1e-9, abs=1e-15), t
    assert schedule.alpha_bars[-1] < 1e-4, "x_T must be close to pure noise"


@pytest.mark.parametrize("timesteps", [1000, 40])
def test_cosine_alpha_bar_follows_its_closed_form_until_the_capped_last_step(timesteps: int) -> None:
    schedule = NoiseSchedule("cosine", timesteps)

    def f(t: float) -> float:
        return math.cos((t / timesteps + 0.008) / 1.008 * math.pi / 2) ** 2

    for t in range(timesteps):
        assert schedule.alpha_bars[t].item() == pytest.approx(f(t) / f(0), rel=1e-9, abs=1e-15), t
    # f(T) = 0 would make beta_T = 1; it is capped at 0.999 (Nichol & Dhariwal).
    assert schedule.alpha_bars[timesteps].item() == pytest.approx(f(timesteps - 1) / f(0) * 1e-3, rel=1e-9)


@pytest.mark.parametrize("objective", ["eps", "v", "flow"])
def test_the_target_as_prediction_gives_back_x0_and_the_noise(objective: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x0, noise = torch.rand(6, 1, 8, 8, generator=generator) * 2 - 1, torch.randn(6, 1, 8, 8, generator=generator)
    path = LinearPath() if objective == "flow" else NoiseSchedule("cosine", 100)
    t = torch.rand(6) if objective == "flow" else torch.randint(1, 100, (6,))
    a, s = path.coefficients(t)
    x_t = noisy(x0, noise, a, s)
    x0_hat, eps_hat = estimates(objective, x_t, target(objective, x0, noise, a, s), a, s)
    assert torch.allclose(x0_hat, x0, atol=1e-4) and torch.allclose(eps_hat, noise, atol=1e-4)


# -- samplers ---------------------------------------------------------------------------------------------------------


def point_mass_denoiser(path, point: torch.Tensor):
    """The exact denoiser of data that is always `point`: x0_hat = point, eps_hat = (x_t - a_t point) / s_t."""

    def denoise(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        a, s = path.scalars(t)
        return point.expand_as(x), (x - a * point) / s

    return denoise


def test_ddim_with_every_step_and_eta_0_follows_the_deterministic_path() -> None:
    """With an exact denoiser, DDIM's x_t stays on a_t x_0 + s_t eps for the initial eps: the probability-flow
    path. T steps visit every t."""
    schedule = NoiseSchedule("linear", 30)
    point, eps = torch.full((1, 1, 4, 4), 0.5), torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    a_T, s_T = schedule.scalars(30)
    path = list(DDIM(schedule, eta=0.0).trajectory(point_mass_denoiser(schedule, point), a_T * point + s_T * eps, 30))
    assert len(path) == 30
    for t, x in zip(range(29, -1, -1), path, strict=True):
        a, s = schedule.scalars(t)
        assert torch.allclose(x, a * point + s * eps, atol=1e-5), t
    assert torch.allclose(path[-1], point.expand_as(path[-1]), atol=1e-6)


def test_euler_is_exact_on_flow_matchings_straight_path() -> None:
    point, noise = torch.full((1, 1, 4, 4), -0.25), torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    path = LinearPath()
    *_, x = Euler(path).trajectory(point_mass_denoiser(path, point), noise, steps=3)
    assert torch.allclose(x, point.expand_as(x), atol=1e-6)


def test_ddpm_is_hos_algorithm_2_with_the_posterior_variance() -> None:
    """The `ddpm` sampler with T steps against DDPM's ancestral loop written out: x_{t-1} = posterior mean at the
    clipped x0 estimate + sqrt(beta_tilde_t) z, with the same z."""
    timesteps = 12
    schedule = NoiseSchedule("linear", timesteps)

    def denoise(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:  # any fixed function will do
        eps = torch.tanh(x * (1 + t / timesteps))
        a, s = schedule.scalars(t)
        return (x - s * eps) / a, eps

    noise = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    *_, sampled = DDIM(schedule, eta=1.0).trajectory(denoise, noise, timesteps, torch.Generator().manual_seed(4))

    betas, alpha_bars = schedule.betas.tolist(), schedule.alpha_bars.tolist()
    x, z = noise.double(), torch.Generator().manual_seed(4)
    for t in range(timesteps, 0, -1):
        x0 = denoise(x.float(), t)[0].double().clamp(-1, 1)
        mean = (
            math.sqrt(alpha_bars[t - 1]) * betas[t] / (1 - alpha_bars[t]) * x0
            + math.sqrt(1 - betas[t]) * (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t]) * x
        )
        variance = betas[t] * (1 - alpha_bars[t - 1]) / (1 - alpha_bars[t])
        x = mean + math.sqrt(variance) * torch.randn(x.shape, generator=z).double() if t > 1 else mean
    assert torch.allclose(sampled.double(), x, atol=1e-4)


@pytest.mark.parametrize(("objective", "sampler"), [("eps", "ddim"), ("eps", "ddpm"), ("v", "ddim"), ("flow", "euler")])
def test_samples_have_the_image_shape_and_a_seed_fixes_them(objective: str, sampler: str) -> None:
    model = digits_diffusion(objective=objective)

    def draw(seed: int) -> torch.Tensor:
        return model.sample(5, seeded(seed), sampler=sampler)

    first = draw(0)
    assert first.shape == (5, 1, 8, 8) and first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, draw(0)) and not torch.equal(first, draw(1))


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_the_sampler_and_its_steps_change_the_samples() -> None:
    model = digits_diffusion()
    ddim = model.sample(3, seeded(), sampler="ddim", steps=5)
    assert not torch.equal(ddim, model.sample(3, seeded(), sampler="ddpm", steps=5))
    assert not torch.equal(ddim, model.sample(3, seeded(), sampler="ddim", steps=2))
    assert torch.equal(ddim, model.sample(3, seeded()))  # the model's own: ddim, sample_steps=5 outside training


@pytest.mark.parametrize(
    ("call", "line"),
    [
        (
            {"sampler": "euler"},
            "sampler='euler' is not a sampler of model.objective=eps; choose one of ['ddim', 'ddpm']",
        ),
        ({"sampler": "heun"}, "sampler='heun' is not a sampler of model.objective=eps"),
        ({"steps": 21}, "steps=21 is more than the 20 steps of the noise schedule (model.timesteps); give at most 20"),
        ({"steps": 0}, "steps=0: a sampler needs at least 1 step"),
        ({"labels": torch.zeros(2)}, "this diffusion model is unconditional"),
    ],
)
def test_bad_sampling_options_are_one_line_errors(call: dict, line: str) -> None:
    with pytest.raises(ConfigError, match="^" + line.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        digits_diffusion().sample(2, **call)


# -- the variational bound --------------------------------------------------------------------------------------------


def test_the_discretized_gaussian_is_a_distribution_over_the_256_levels() -> None:
    levels = torch.linspace(-1, 1, 256)
    for mean, log_scale in [(0.3, -3.0), (1.0, -6.0), (-2.0, 0.0), (0.0, 2.0)]:
        log_p = discretized_gaussian_log_likelihood(levels, torch.tensor(mean), torch.tensor(log_scale))
        assert torch.isfinite(log_p).all() and log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_strata_cover_every_term_once() -> None:
    for timesteps, terms in [(1000, 16), (20, 3), (20, None), (5, 100)]:
        covered = [t for first, last in strata(timesteps, terms) for t in range(first, last + 1)]
        assert covered == list(range(2, timesteps + 1)), (timesteps, terms)


def test_the_stratified_bound_is_an_unbiased_estimate_of_the_full_sum() -> None:
    schedule = NoiseSchedule("linear", 10)
    x0 = torch.randint(0, 256, (4, 1, 4, 4), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    copies = x0.repeat(500, 1, 1, 1)  # 500 draws of the estimate for each image, at once

    def estimate_x0(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # an imperfect denoiser
        a, _ = schedule.coefficients(t)
        return (0.8 * x_t / a.view(-1, 1, 1, 1)).clamp(-1, 1)

    torch.manual_seed(0)
    full, stratified = (negative_elbo(schedule, estimate_x0, copies, terms).mean().item() for terms in (None, 2))
    assert full > 0 and stratified == pytest.approx(full, rel=0.02)


def test_an_exact_denoiser_pays_only_the_variances_and_the_decoder() -> None:
    schedule = NoiseSchedule("linear", 1000)
    x0 = torch.randint(0, 256, (2, 1, 8, 8), generator=torch.Generator().manual_seed(0)).float() / 127.5 - 1
    estimated, summed = (negative_elbo(schedule, lambda x_t, t: x0, x0, terms) for terms in (8, None))
    bits_per_dim = estimated / (64 * math.log(2))
    assert torch.allclose(estimated, summed) and (bits_per_dim > 1).all() and (bits_per_dim < 3).all()


# -- the UNet ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
def test_the_unet_fits_every_standard_image_shape(shape: tuple[int, int, int]) -> None:
    net = UNet(shape, channels=8, num_res_blocks=1, attention_heads=2)
    x = torch.randn(2, *shape)
    assert net(x, torch.rand(2)).shape == x.shape


@pytest.mark.parametrize(
    ("kwargs", "line"),
    [
        ({"shape": (1, 28, 28), "channel_mults": [1, 2, 2, 2]}, "but 28x28 images do not divide by 8"),
        ({"shape": (1, 8, 8), "channels": 12, "attention_heads": 8}, "model.net.attention_heads=8 does not divide"),
    ],
)
def test_a_unet_that_does_not_fit_is_refused(kwargs: dict, line: str) -> None:
    with pytest.raises(ConfigError, match=line):
        UNet(**kwargs)


# -- training ---------------------------------------------------------------------------------------------------------


def test_the_eps_loss_falls() -> None:
    torch.manual_seed(0)
    model = digits_diffusion(timesteps=100).train()
    datamodule = DigitsDataModule()
    datamodule.setup()
    x0 = model.to_model_range(datamodule.splits["train"][torch.arange(32)][0])
    optimizer = torch.optim.Adam(model.net.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        loss = model.loss(x0, model.net)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    # A nearly zero output layer predicts eps = 0 (loss 1) at first; 20 steps bring it to about 0.35.
    assert losses[0] == pytest.approx(1.0, abs=0.1) and sum(losses[-5:]) / 5 < 0.6, losses


@pytest.mark.parametrize(
    ("objective", "precision"), [("eps", "32-true"), ("v", "bf16-mixed"), ("flow", "32-true")], ids=["eps", "v", "flow"]
)
def test_each_objective_trains_end_to_end(genlab_train, objective: str, precision: str) -> None:
    run = genlab_train(*TINY_DIFFUSION, f"model.objective={objective}", f"trainer.precision={precision}").check()
    metrics = run.metrics
    assert metrics["judged_metric"] == "val/fid" and metrics["judged_mode"] == "min"
    for name in ("val/fid", "test/fid", "test/kid", "val/loss", "test/loss"):
        assert math.isfinite(metrics[name]), name
    if objective == "flow":
        assert "test/bpd" not in metrics  # flow matching's likelihood is not computed
    else:
        assert 0 < metrics["test/bpd"] < 20
    state = torch.load(run.dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["state_dict"]["net_ema.n_averaged"] == state["global_step"] == 4, "one EMA update per step"
    for picture in ("samples", "trajectory", "interpolation"):
        assert (run.dir / "samples" / f"{picture}.png").is_file(), picture


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["model.sampler=heun"], "model.sampler='heun' is not allowed: expected one of 'ddpm', 'ddim', 'euler'"),
        (
            ["model.objective=flow", "model.sampler=ddpm"],
            "model.sampler='ddpm' is not a sampler of model.objective=flow",
        ),
        (["model.eval_steps=2000"], "model.eval_steps=2000 is more than the 1000 steps of the noise schedule"),
        (
            ["data=image_folder", "data.path=.", "data.image_size=28", "model.net.channel_mults=[1,2,2,2]"],
            "model/net=unet halves the image 3 times (model.net.channel_mults=[1, 2, 2, 2]), but 28x28 images",
        ),
        (["model/net=mlp"], "the net MLPEncoderDecoder (model/net) does not fit the diffusion model"),
    ],
)
def test_bad_diffusion_settings_are_one_line_errors(genlab_train, overrides: list[str], line: str) -> None:
    run = genlab_train("model=diffusion", *overrides)
    assert run.returncode == 2, run.stderr[-2000:]
    (error,) = run.stderr.strip().splitlines()
    assert error.startswith(f"genlab-train: error: {line}")
