"""GAN objectives on discriminator scores (unnormalised logits), and the gradient penalties that regularise D."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Critic = Callable[[torch.Tensor], torch.Tensor]


def discriminator_loss(loss: str, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """What D minimises, given its scores on real and generated images (before any penalty)."""
    if loss == "nonsaturating":  # binary cross-entropy with real = 1, fake = 0
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if loss == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    return fake.mean() - real.mean()  # wgan_gp: the critic estimates a Wasserstein distance


def generator_loss(loss: str, fake: torch.Tensor) -> torch.Tensor:
    """What G minimises, given D's scores on its images. Non-saturating: -log D(G(z)), strong gradients early on."""
    if loss == "nonsaturating":
        return F.softplus(-fake).mean()
    return -fake.mean()  # hinge and wgan_gp


LOSSES = ("nonsaturating", "hinge", "wgan_gp")


def _input_gradient(critic: Critic, x: torch.Tensor) -> torch.Tensor:
    """d critic(x) / dx per sample, kept in the graph so the penalty itself can be trained through.

    Computed in float32 with autocast off: squared gradient norms of half-precision scores overflow or vanish.
    """
    x = x.detach().float().requires_grad_(True)
    with torch.autocast(device_type=x.device.type, enabled=False):
        scores = critic(x).float()
    (gradient,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return gradient.flatten(1)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al., 2017): (||grad D(x_hat)|| - 1)^2 on random points between real and fake images.

    Zero for a critic that is 1-Lipschitz along those lines; the configured weight multiplies it.
    """
    mix = torch.rand((len(real),) + (1,) * (real.dim() - 1), device=real.device)
    between = mix * real.detach().float() + (1 - mix) * fake.detach().float()
    return (_input_gradient(critic, between).norm(dim=1) - 1).pow(2).mean()


def r1_penalty(critic: Critic, real: torch.Tensor) -> torch.Tensor:
    """R1 (Mescheder et al., 2018): ||grad D(x)||^2 on real images, pushing D to be flat on the data."""
    return _input_gradient(critic, real).pow(2).sum(dim=1).mean()


def mode_seeking_penalty(
    first: torch.Tensor, second: torch.Tensor, z_first: torch.Tensor, z_second: torch.Tensor
) -> torch.Tensor:
    """MSGAN (Mao et al., 2019): 1 / (distance of two images over the distance of their noises), for pairs drawn for
    the same labels. Small when different noises give different images, so G minimising it stops sending a whole
    class to one image (the within-class collapse that test/class_spread shows)."""
    images = (first.float() - second.float()).abs().flatten(1).mean(1)
    noises = (z_first.float() - z_second.float()).abs().flatten(1).mean(1)
    return 1 / ((images / noises).mean() + 1e-5)
