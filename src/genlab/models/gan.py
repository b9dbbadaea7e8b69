"""Generative adversarial network with Lightning 2.x manual optimization: `n_critic` discriminator steps per
generator step, each with its own optimizer and scheduler, an EMA generator for evaluation, and the usual losses."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Literal

import torch
from torch import nn

from genlab.data.masks import check_images, check_mask, paste
from genlab.data.spec import DataSpec
from genlab.models.base import GenerativeModel, OptimizerFactory, SchedulerFactory, build_net
from genlab.models.conditioning import ClassConditioning, Labels
from genlab.models.contracts import ConditionalModel, Grid, Grids, Inpainter, LatentImageGenerator
from genlab.models.ema import ema_copy
from genlab.models.executions import step_schedulers
from genlab.models.gan_losses import (
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    mode_seeking_penalty,
    r1_penalty,
)
from genlab.models.images import SignedImageRange, slerp
from genlab.settings import NonNegativeFloat, PositiveFloat, PositiveInt, UnitFraction
from genlab.upstream import foreach_norm


def gradient_norm(parameters: Iterable[nn.Parameter]) -> torch.Tensor:
    """The L2 norm of all gradients together (0 when none exist yet)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(foreach_norm(grads))) if grads else torch.zeros(())


class GAN(GenerativeModel, LatentImageGenerator, ConditionalModel, Inpainter, SignedImageRange):
    """Generator G and discriminator D from `net`, trained adversarially; judged by `val/fid` (lower is better).

    Every training batch makes one D step; every `n_critic`-th batch also makes one G step (the WGAN recipe), so
    an epoch of N batches makes N D steps and N / n_critic G steps. `trainer.global_step` counts both kinds
    (Lightning counts every optimizer step), so `trainer.max_steps` does too.

    Images are mapped to [-1, 1] for D and G (tanh outputs); `sample` returns [0, 1] like every image model. The
    EMA copy of G (`ema_decay`, 0 = off) is what samples, pictures and FID use, and is saved in checkpoints.
    Logged per logged step: `train/d_loss`, `train/g_loss`, `train/d_real` and `train/d_fake` (mean D score),
    `train/d_grad_norm`, `train/g_grad_norm`, `train/gp` (the weighted penalty term); per evaluation split
    `d_real` and `d_fake` (the sample-quality callback adds `fid`, `kid`).

    `conditional`: a class-conditional GAN. G and D both take the label (see `genlab.nets.gan`); the fakes of a
    batch are made for the real images' labels, so D compares real and fake images of the same classes (and the
    gradient penalty interpolates between images of one class), with every loss, R1 and the EMA generator.
    """

    judged_metric = "val/fid"
    judged_mode = "min"
    # Each of the two steps leaves the other network without gradients.
    ddp_find_unused_parameters = True

    def __init__(
        self,
        spec: DataSpec,
        net: Callable[..., nn.Module],
        optimizer: OptimizerFactory,
        discriminator_optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        discriminator_scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        latent_dim: PositiveInt = 64,
        loss: Literal["nonsaturating", "hinge", "wgan_gp"] = "nonsaturating",
        n_critic: PositiveInt = 1,
        gp_weight: NonNegativeFloat = 10.0,
        r1_weight: NonNegativeFloat = 0.0,
        mode_seeking_weight: NonNegativeFloat = 0.003,
        ema_decay: UnitFraction = 0.999,
        gradient_clip_val: PositiveFloat | None = None,
        conditional: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        spec.require_kind("image", "GAN")
        self.automatic_optimization = False
        self.spec = spec
        self.conditioning = ClassConditioning.of(spec, conditional, "GAN")
        self.latent_dim = latent_dim
        self.loss = loss
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.r1_weight = r1_weight
        self.mode_seeking_weight = mode_seeking_weight
        self.gradient_clip_val = gradient_clip_val
        self.discriminator_optimizer_factory = discriminator_optimizer
        self.discriminator_scheduler_factory = discriminator_scheduler
        self.net = build_net(
            net,
            "image",
            "GAN",
            ("generator", "discriminator"),
            shape=spec.shape,
            latent_dim=latent_dim,
            **self.conditioning.net_sizes(),
        )
        self.generator_ema = ema_copy(self.net.generator, ema_decay)
        self.latest_generator_values: dict[str, Any] = {}
        self.register_data_range(spec)

    # -- the model ------------------------------------------------------------------------------------------------

    @property
    def generator(self) -> nn.Module:
        return self.net.generator

    @property
    def discriminator(self) -> nn.Module:
        return self.net.discriminator

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator that evaluation and pictures use: the EMA copy when there is one."""
        return self.generator_ema.module if self.generator_ema is not None else self.generator

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn((n, self.latent_dim), generator=generator).to(self.device)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images in [0, 1] from latents (and labels, when conditional), by the sampling generator."""
        images = self.sampling_generator(z, labels).float()
        return ((images + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: Labels | None = None) -> torch.Tensor:
        """n images in [0, 1] from the EMA generator; pass a seeded CPU generator for the same noise every time. A
        conditional GAN draws them for `labels` (one class, or one per image), by default spread evenly over the
        classes."""
        z = self.noise(n, generator)
        return self.generate(z, self.conditioning.for_sampling(n, labels, self.device))

    def inpaint(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        labels: Labels | None = None,
        *,
        steps: PositiveInt = 200,
        lr: PositiveFloat = 0.05,
    ) -> torch.Tensor:
        """`images` (in [0, 1]) completed where `mask` is 0 by GAN inversion on the known pixels: Adam (`lr`) on a
        latent drawn from `generator`, `steps` times, against their squared error (Yeh et al., 2017, without the
        discriminator's term); the weights are not touched. A conditional GAN needs the images' `labels`."""
        with torch.inference_mode(False), torch.enable_grad():  # also when called under no_grad or inference mode
            images = check_images(images, self.spec.shape, self.device).clone()
            mask = check_mask(images, mask).clone()
            labels = self.conditioning.for_editing(len(images), labels, self.device)
            z = self.noise(len(images), generator).clone().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=lr)
            for _ in range(steps):
                loss = ((self.generate(z, labels) - images) * mask).square().sum()
                (z.grad,) = torch.autograd.grad(loss, z)
                optimizer.step()
            with torch.no_grad():
                return paste(images, mask, self.generate(z, labels))

    # -- training ---------------------------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        return [
            self.build_optimizer(self.optimizer_factory, self.scheduler_factory, self.generator.parameters()),
            self.build_optimizer(
                self.discriminator_optimizer_factory,
                self.discriminator_scheduler_factory,
                self.discriminator.parameters(),
            ),
        ]

    def _step(
        self,
        optimizer: Any,
        loss: torch.Tensor,
        parameters: Callable[[], Iterable[nn.Parameter]],
        measure: bool,
        name: str,
    ) -> float:
        """Backward, optional clipping and one step of `optimizer`; returns the (unclipped) gradient norm if `measure`.

        Under 16-mixed the gradients are still multiplied by the loss scale here (Lightning unscales them inside
        `optimizer.step`, and unscaling twice is an error), so the clip threshold is scaled and the norm unscaled.
        """
        optimizer.zero_grad(set_to_none=True)
        self.backward_name = name
        self.backward_pass(loss)
        scale = self.loss_scale()
        norm = float(gradient_norm(parameters())) / scale if measure else math.nan  # before clipping
        if self.gradient_clip_val is not None:
            self.clip_gradients(
                optimizer, gradient_clip_val=self.gradient_clip_val * scale, gradient_clip_algorithm="norm"
            )
        self.stepping_optimizer(optimizer).step()
        return norm

    def loss_scale(self) -> float:
        """The GradScaler's current factor under 16-mixed on a GPU; 1 otherwise."""
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def training_batch(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        g_optimizer, d_optimizer = self.optimizers()
        real = self.to_model_range(batch[0])
        labels = self.conditioning.of_batch(batch[1])  # the fakes' labels too: D compares like with like
        critic = partial(self.discriminator, labels=labels)
        n = len(real)
        generator_steps = (batch_idx + 1) % self.n_critic == 0
        # With one D step per G step, D's fakes are also G's (as in pytorch/examples' dcgan): one G forward less.
        reuse_fake = generator_steps and self.n_critic == 1
        with torch.set_grad_enabled(reuse_fake):
            z = self.noise(n)
            fake = self.generator(z, labels)

        with self.toggled_optimizer(d_optimizer):
            real_scores = critic(real)
            fake_scores = critic(fake.detach())
            d_loss = discriminator_loss(self.loss, real_scores, fake_scores)
            penalty = torch.zeros((), device=self.device)
            if self.loss == "wgan_gp" and self.gp_weight > 0:
                penalty = penalty + self.gp_weight * gradient_penalty(critic, real, fake)
            if self.r1_weight > 0:
                penalty = penalty + self.r1_weight / 2 * r1_penalty(critic, real)
            d_grad_norm = self._step(
                d_optimizer,
                d_loss + penalty,
                self.discriminator.parameters,
                measure=self.logging_this_step,
                name="train/d_loss",
            )

        values: dict[str, Any] = {
            "train/d_real": real_scores.detach().float().mean(),
            "train/d_fake": fake_scores.detach().float().mean(),
            "train/d_grad_norm": d_grad_norm,
            "train/gp": penalty.detach(),
        }
        total = d_loss.detach()
        if generator_steps:
            with self.toggled_optimizer(g_optimizer):
                if not reuse_fake:
                    z = self.noise(n)
                    fake = self.generator(z, labels)
                g_loss = generator_loss(self.loss, critic(fake))
                if self.mode_seeking_weight > 0:  # a second image for each (noise, label): one more G pass
                    z_other = self.noise(n)
                    other = self.generator(z_other, labels)
                    g_loss = g_loss + self.mode_seeking_weight * mode_seeking_penalty(fake, other, z, z_other)
                # With n_critic > 1 a logged step may make no G step: log the latest G values on every logged step.
                measure = self.logging_this_step or self.n_critic > 1
                g_grad_norm = self._step(g_optimizer, g_loss, self.generator.parameters, measure, "train/g_loss")
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)
            if self.scheduler_interval == "step":
                step_schedulers(self)  # both together (per G step or per epoch)
            self.latest_generator_values = {"train/g_loss": g_loss.detach(), "train/g_grad_norm": g_grad_norm}
            total = total + g_loss.detach()

        self.log_training_step(d_loss.detach(), lambda: {**values, **self.latest_generator_values}, name="train/d_loss")
        return total

    # -- evaluation -------------------------------------------------------------------------------------------------

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, split: str) -> None:
        real = self.to_model_range(batch[0])
        labels = self.conditioning.of_batch(batch[1])
        with self.fixed_noise(batch_idx):
            fake = self.sampling_generator(self.noise(len(real)), labels)
        self.log_dict(
            {
                f"{split}/d_real": self.discriminator(real, labels).float().mean(),
                f"{split}/d_fake": self.discriminator(fake, labels).float().mean(),
            },
            batch_size=len(real),
            sync_dist=True,
        )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    # -- pictures ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def image_grids(self, batch: torch.Tensor, generator: torch.Generator, labels: torch.Tensor | None = None) -> Grids:
        """Fixed-noise samples and spherical interpolations between latent points, all from the EMA generator.

        A conditional GAN draws one row of samples per class (each column one noise vector, so only the label
        changes down a column) and interpolates row i within class i mod K; the data batch is not used.
        """
        pairs, steps = 8, 10
        rows = None
        if self.conditioning.enabled:
            samples = self.generate(*self.conditioning.class_grid(self.noise(8, generator)))
            rows = self.conditioning.row_labels()
            row_classes = torch.arange(pairs, device=self.device) % self.conditioning.num_classes
            path_labels = row_classes.repeat_interleave(steps)
        else:
            samples, path_labels = self.sample(64, generator), None
        z = self.noise(2 * pairs, generator)
        path = slerp(z[:pairs], z[pairs:], torch.linspace(0, 1, steps, device=self.device))
        return {
            "samples": Grid(samples, 8, rows),
            "interpolation": (self.generate(path.flatten(0, 1), path_labels), steps),
        }
