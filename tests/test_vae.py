"""The VAE's math and checks, in-process on tiny nets."""

from __future__ import annotations

import functools
import math
import re

import pytest
import torch

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError, DataError
from genlab.metrics.likelihood import bits_per_dim, gaussian_kl, importance_weighted_bound, negative_log_likelihood
from genlab.models.vae import VAE
from genlab.nets.conv import ConvEncoderDecoder
from genlab.nets.mlp import MLPEncoderDecoder

DIGITS = DataSpec(kind="image", shape=(1, 8, 8), name="digits")


def make_vae(spec: DataSpec = DIGITS, net=None, **kwargs) -> VAE:
    net = net or functools.partial(MLPEncoderDecoder, hidden_dims=[32])
    return VAE(spec=spec, net=net, optimizer=functools.partial(torch.optim.Adam, lr=1e-3), latent_dim=4, **kwargs)


def images(n: int = 16, shape=(1, 8, 8)) -> torch.Tensor:
    return torch.rand((n, *shape), generator=torch.Generator().manual_seed(0))


def test_importance_weighted_bound_is_tighter_than_the_average_log_weight() -> None:
    log_weights = torch.randn(50, 8, generator=torch.Generator().manual_seed(1)) * 3
    bound = importance_weighted_bound(log_weights)
    assert torch.all(bound >= log_weights.mean(0))
    assert torch.allclose(importance_weighted_bound(log_weights[:1]), log_weights[0])


def test_iwae_nll_is_at_most_the_negative_elbo_on_the_same_batch() -> None:
    torch.manual_seed(0)
    vae = make_vae()
    x = images(64)
    repeats = 200
    with torch.no_grad():
        mu, logvar = vae.encode(x)
        # E_q[-log p(x|z)] over `repeats` samples per image, drawn in one batch.
        recon = vae._terms(x.repeat(repeats, 1, 1, 1))[1].view(repeats, len(x)).mean(0)
        negative_elbo = (recon + gaussian_kl(mu, logvar).sum(1)).mean()
        nll_iwae = vae.importance_weighted_nll(x, k=repeats).mean()
        nll_iwae_1 = vae.importance_weighted_nll(x.repeat(repeats, 1, 1, 1), k=1).mean()
    assert nll_iwae <= negative_elbo
    # With one sample the bound is the ELBO (Monte Carlo KL instead of the analytic one).
    assert nll_iwae_1 == pytest.approx(negative_elbo.item(), rel=2e-3)


def test_bernoulli_and_gaussian_negative_log_likelihoods_match_torch_distributions() -> None:
    x = images(4)
    params = torch.randn_like(x)
    expected = x * torch.nn.functional.logsigmoid(params) + (1 - x) * torch.nn.functional.logsigmoid(-params)
    nll = negative_log_likelihood(x, params, "bernoulli", torch.tensor(0.0))
    assert torch.allclose(nll, -expected.flatten(1).sum(1))
    log_scale = torch.tensor(-1.3)
    normal = torch.distributions.Normal(params, log_scale.exp()).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(negative_log_likelihood(x, params, "gaussian", log_scale), -normal, atol=1e-4)


def test_bits_per_dim_converts_nats() -> None:
    assert bits_per_dim(64 * math.log(2), 64) == pytest.approx(1.0)


def test_kl_warmup_ramps_beta_linearly() -> None:
    vae = make_vae(beta=2.0, kl_warmup_steps=10)
    trainer = type("T", (), {"global_step": 4})()
    vae.trainer = trainer  # global_step is read from the trainer
    assert vae.kl_weight() == pytest.approx(2.0 * 5 / 10)
    trainer.global_step = 100
    assert vae.kl_weight() == pytest.approx(2.0)


def encoder_grads(vae: VAE, loss: torch.Tensor) -> list[torch.Tensor]:
    vae.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in vae.net.encoder.parameters()]


def test_free_bits_remove_the_kl_gradient_below_the_threshold(monkeypatch) -> None:
    vae = make_vae(free_bits=100.0)  # far above any KL here: only the reconstruction term may push the encoder
    monkeypatch.setattr(vae, "log_training_step", lambda *args: None)
    batch = (images(8), torch.zeros(8))
    torch.manual_seed(0)
    with_free_bits = encoder_grads(vae, vae.training_step(batch, 0))
    torch.manual_seed(0)
    recon_only = encoder_grads(vae, vae._terms(batch[0])[1].mean())
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(with_free_bits, recon_only, strict=True))
    vae.free_bits = 0.0
    torch.manual_seed(0)
    plain = encoder_grads(vae, vae.training_step(batch, 0))
    assert not all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, recon_only, strict=True))


@pytest.mark.parametrize(("kl_weight", "free_bits"), [(1.0, 0.0), (0.5, 0.0), (1.0, 0.1), (2.0, 0.3)])
def test_the_training_objective_weighs_the_kl_with_free_bits(kl_weight: float, free_bits: float) -> None:
    """The negative ELBO's own arithmetic at beta 1 without free bits, the general form otherwise: same values."""
    vae = make_vae(free_bits=free_bits)
    torch.manual_seed(0)
    recon, kl = torch.rand(8) * 100, torch.rand(8, 4) * 0.2
    expected = recon.mean() + kl_weight * kl.mean(0).clamp(min=free_bits).sum()
    assert torch.allclose(vae.training_objective(recon, kl, kl_weight), expected)


def test_gaussian_bits_per_dim_are_on_8_bit_pixel_values() -> None:
    nats = torch.tensor(64 * math.log(2))
    assert make_vae().bits_per_dim(nats) == pytest.approx(1.0)
    assert make_vae(likelihood="gaussian").bits_per_dim(nats) == pytest.approx(9.0)


def test_gaussian_scale_is_learned_or_fixed() -> None:
    learned = make_vae(likelihood="gaussian", gaussian_scale="learned")
    assert any(p is learned.log_scale for p in learned.parameters())
    fixed = make_vae(likelihood="gaussian", gaussian_scale=0.1)
    assert fixed.log_scale.item() == pytest.approx(math.log(0.1))
    assert not any(p is fixed.log_scale for p in fixed.parameters())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.beta=-0.5"], "model.beta=-0.5 is not allowed: expected a number >= 0"),
        (["model.likelihood=poisson"], "model.likelihood='poisson' is not allowed: expected one of 'bernoulli'"),
        (["model.likelihood=gaussian", "model.gaussian_scale=-1.0"], "model.gaussian_scale=-1.0 is not allowed"),
        (["model.free_bits=-1"], "model.free_bits=-1 is not allowed: expected a number >= 0"),
        (["model.eval_iwae_k=-1"], "model.eval_iwae_k=-1 is not allowed: expected an integer >= 0"),
        (["model.net.hidden_dims=[]"], "model.net.hidden_dims=[] is not allowed: expected a non-empty list"),
    ],
)
def test_bad_settings_are_refused_before_anything_is_built(compose_config, overrides: list, message: str) -> None:
    from genlab.checks import check_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_config(*overrides))


def test_a_conv_net_that_does_not_fit_the_image_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="do not divide by 16"):
        make_vae(net=functools.partial(ConvEncoderDecoder, channels=[8, 8, 8, 8]))


def test_text_data_is_refused_with_a_clear_error() -> None:
    text = DataSpec(kind="text", shape=(64,), vocab_size=65, name="shakespeare")
    with pytest.raises(DataError, match="VAE models image data, but data=shakespeare gives text data"):
        make_vae(spec=text)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32), (3, 64, 64)])
@pytest.mark.parametrize("net", [MLPEncoderDecoder, ConvEncoderDecoder])
def test_nets_fit_every_standard_image_shape(shape, net) -> None:
    vae = make_vae(spec=DataSpec(kind="image", shape=shape), net=net)
    x = images(2, shape)
    mu, logvar = vae.encode(x)
    assert mu.shape == logvar.shape == (2, 4)
    assert vae.decode(mu).shape == x.shape


def test_evaluation_noise_is_fixed_and_leaves_the_training_stream_alone() -> None:
    vae = make_vae()
    x = images(8)
    torch.manual_seed(1)
    with vae.fixed_noise(0):
        first = vae._terms(x)[1]
    next_training_draw = torch.rand(1)
    torch.manual_seed(2)
    with vae.fixed_noise(0):
        second = vae._terms(x)[1]
    assert torch.equal(first, second), "evaluation noise depends on the outer random state"
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), next_training_draw), "evaluation consumed the training random stream"


def test_image_grids_are_images_in_unit_range() -> None:
    vae = make_vae()
    grids = vae.image_grids(images(32), torch.Generator().manual_seed(0))
    assert set(grids) == {"reconstructions", "samples", "interpolation"}
    for images_, nrow in grids.values():
        assert images_.shape[1:] == (1, 8, 8) and nrow > 0
        assert images_.min() >= 0 and images_.max() <= 1
    again = vae.image_grids(images(32), torch.Generator().manual_seed(0))
    assert torch.equal(grids["samples"][0], again["samples"][0])
