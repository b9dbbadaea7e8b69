"""Variational autoencoder (Kingma & Welling, 2014) with the knobs researchers compare: likelihood, beta,
KL warm-up, free bits, an importance-weighted test bound, and class-conditional generation (Sohn et al., 2015)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import nn

from genlab.data.masks import check_images, check_mask, paste
from genlab.data.spec import DataSpec
from genlab.errors import check
from genlab.interrupts import stop_if_requested
from genlab.metrics.active_units import ActiveUnits
from genlab.metrics.likelihood import (
    bits_per_dim,
    gaussian_kl,
    gaussian_log_prob,
    importance_weighted_bound,
    negative_log_likelihood,
)
from genlab.models.base import GenerativeModel, OptimizerFactory, SchedulerFactory, build_net
from genlab.models.conditioning import ClassConditioning, Labels
from genlab.models.contracts import ConditionalModel, Grid, Grids, Inpainter, LatentImageGenerator
from genlab.settings import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt

#: Decoded images per chunk when drawing many importance samples, to bound memory.
IWAE_IMAGES_PER_CHUNK = 8192


class VAE(GenerativeModel, LatentImageGenerator, ConditionalModel, Inpainter):
    """Gaussian-posterior VAE over images.

    Logged, per split: `elbo` (negative ELBO, nats per image, beta = 1 whatever the training beta), `recon`,
    `kl` (both nats per image), `bpd` (elbo in bits per dimension) and `active_units`; at test time also
    `nll_iwae`, the importance-weighted bound with `eval_iwae_k` samples (0 disables it).

    `conditional`: a conditional VAE (Sohn et al., 2015): the class label enters encoder and decoder, q(z | x, y)
    and p(x | z, y), and the prior stays standard normal; its `elbo` and `nll_iwae` then bound -log p(x | y).
    """

    judged_metric = "val/elbo"
    judged_mode = "min"

    def __init__(
        self,
        spec: DataSpec,
        net: Callable[..., nn.Module],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
        latent_dim: PositiveInt = 16,
        likelihood: Literal["bernoulli", "gaussian"] = "bernoulli",
        gaussian_scale: PositiveFloat | Literal["learned"] = "learned",
        beta: NonNegativeFloat = 1.0,
        kl_warmup_steps: NonNegativeInt = 0,
        free_bits: NonNegativeFloat = 0.0,
        eval_iwae_k: NonNegativeInt = 100,
        active_unit_threshold: NonNegativeFloat = 0.01,
        conditional: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        spec.require_kind("image", "VAE")
        if likelihood == "bernoulli":
            check(
                tuple(spec.value_range) == (0.0, 1.0),
                f"model.likelihood=bernoulli needs data in [0, 1], but data={spec.name} is in {spec.value_range}",
            )
        self.spec = spec
        self.conditioning = ClassConditioning.of(spec, conditional, "VAE")
        self.latent_dim = latent_dim
        self.likelihood = likelihood
        self.beta = beta
        self.kl_warmup_steps = kl_warmup_steps
        self.free_bits = free_bits
        self.eval_iwae_k = eval_iwae_k
        self.net = build_net(
            net,
            "image",
            "VAE",
            ("encoder", "decoder"),
            shape=spec.shape,
            latent_dim=latent_dim,
            **self.conditioning.net_sizes(),
        )
        if likelihood == "gaussian" and gaussian_scale == "learned":
            self.log_scale = nn.Parameter(torch.zeros(()))
        else:
            fixed = math.log(gaussian_scale) if likelihood == "gaussian" else 0.0
            self.register_buffer("log_scale", torch.tensor(fixed))
        self.active_units = nn.ModuleDict(
            {split: ActiveUnits(latent_dim, active_unit_threshold) for split in ("val", "test")}
        )

    # -- the model ------------------------------------------------------------------------------------------------

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and log-variance, in float32 so sampling keeps its precision under autocast."""
        mu, logvar = self.net.encoder(x, labels).float().chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Likelihood parameters: logits (bernoulli) or means (gaussian), shaped like the images."""
        return self.net.decoder(z, labels)

    def mean_image(self, params: torch.Tensor) -> torch.Tensor:
        """The expected image in [0, 1] under the decoder's likelihood."""
        params = params.float()
        return torch.sigmoid(params) if self.likelihood == "bernoulli" else params.clamp(0, 1)

    def bits_per_dim(self, nats: torch.Tensor) -> torch.Tensor:
        """Nats per image to bits per dimension. A Gaussian density is measured on [0, 1]-scaled pixels; adding
        log2(256) = 8 bits expresses it on 8-bit pixel values, the convention of bits/dim tables (e.g. CIFAR-10)."""
        bits = bits_per_dim(nats, self.spec.num_dims)
        return bits + math.log2(256) if self.likelihood == "gaussian" else bits

    def kl_weight(self) -> float:
        """beta, ramped linearly from 0 over the first `kl_warmup_steps` optimizer steps."""
        if self.kl_warmup_steps == 0:
            return self.beta
        return self.beta * min(1.0, (self.global_step + 1) / self.kl_warmup_steps)

    def training_objective(self, recon: torch.Tensor, kl: torch.Tensor, kl_weight: float) -> torch.Tensor:
        """The loss minimized: reconstruction plus `kl_weight` times the KL, where free bits (Kingma et al., 2016)
        put no pressure on a latent dimension while its batch-mean KL is below `free_bits` nats (the reported ELBO
        always uses the plain KL). At beta 1 without free bits it is the negative ELBO, computed as a textbook loop
        does: fewer autograd nodes per step, which a small model on a CPU feels (benchmarks/vae_mnist.py)."""
        if kl_weight == 1.0 and self.free_bits == 0.0:
            return (recon + kl.sum(1)).mean()
        return recon.mean() + kl_weight * kl.mean(0).clamp(min=self.free_bits).sum()

    def _terms(
        self, x: torch.Tensor, labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Posterior means (N, L), reconstruction NLL (N,) and KL per latent dimension (N, L), one sample of z."""
        mu, logvar = self.encode(x, labels)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = negative_log_likelihood(x, self.decode(z, labels), self.likelihood, self.log_scale)
        return mu, recon, gaussian_kl(mu, logvar)

    def importance_weighted_nll(self, x: torch.Tensor, k: int, labels: torch.Tensor | None = None) -> torch.Tensor:
        """-log p(x) (or -log p(x | y)) bounded from above with k importance samples from q(z | x); nats per image,
        shape (N,)."""
        mu, logvar = self.encode(x, labels)
        zeros = torch.zeros_like(mu)
        per_chunk = max(1, IWAE_IMAGES_PER_CHUNK // len(x))
        log_weights = []
        for start in range(0, k, per_chunk):
            stop_if_requested()
            samples = min(per_chunk, k - start)
            z = mu + torch.randn((samples, *mu.shape), device=mu.device) * torch.exp(0.5 * logvar)
            params = self.decode(z.flatten(0, 1), None if labels is None else labels.repeat(samples))
            repeated_x = x.unsqueeze(0).expand(samples, *x.shape).flatten(0, 1)
            log_px = -negative_log_likelihood(repeated_x, params, self.likelihood, self.log_scale).view(samples, len(x))
            log_weights.append(log_px + gaussian_log_prob(z, zeros, zeros) - gaussian_log_prob(z, mu, logvar))
        return -importance_weighted_bound(torch.cat(log_weights))

    # -- Lightning hooks --------------------------------------------------------------------------------------------

    def _terms_to_log(self, split: str, recon: torch.Tensor, kl: torch.Tensor) -> dict[str, torch.Tensor]:
        kl_total = kl.sum(1)
        values = {"elbo": (recon + kl_total).mean(), "recon": recon.mean(), "kl": kl_total.mean()}
        values["bpd"] = self.bits_per_dim(values["elbo"])
        return {f"{split}/{name}": value for name, value in values.items()}

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, labels = batch
        _, recon, kl = self._terms(x, self.conditioning.of_batch(labels))
        kl_weight = self.kl_weight()
        loss = self.training_objective(recon, kl, kl_weight)

        def extra() -> dict[str, torch.Tensor | float]:
            return {**self._terms_to_log("train", recon.detach(), kl.detach()), "train/kl_weight": kl_weight}

        self.log_training_step(loss, extra)
        return loss

    def _evaluate(self, x: torch.Tensor, labels: torch.Tensor | None, split: str) -> None:
        mu, recon, kl = self._terms(x, labels)
        self.log_dict(self._terms_to_log(split, recon, kl), batch_size=len(x), sync_dist=True)
        self.active_units[split].update(mu)
        self.log(f"{split}/active_units", self.active_units[split], on_step=False, on_epoch=True)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, labels = batch
        with self.fixed_noise(batch_idx):
            self._evaluate(x, self.conditioning.of_batch(labels), "val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, labels = batch
        labels = self.conditioning.of_batch(labels)
        with self.fixed_noise(batch_idx):
            self._evaluate(x, labels, "test")
            if self.eval_iwae_k > 0:
                nll = self.importance_weighted_nll(x, self.eval_iwae_k, labels).mean()
                self.log("test/nll_iwae", nll, batch_size=len(x), sync_dist=True)
                self.log("test/bpd_iwae", self.bits_per_dim(nll), batch_size=len(x), sync_dist=True)

    # -- pictures ---------------------------------------------------------------------------------------------------

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n latent points from the prior, drawn on the CPU (the same noise on every device)."""
        return torch.randn((n, self.latent_dim), generator=generator).to(self.device)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Images (the decoder's means) of latent points (for `labels`, when conditional)."""
        return self.mean_image(self.decode(z, labels))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, labels: Labels | None = None) -> torch.Tensor:
        """n images from the prior; pass a seeded CPU generator for the same noise every time. A conditional VAE
        draws them for `labels` (one class, or one per image), by default spread evenly over the classes."""
        return self.generate(self.noise(n, generator), self.conditioning.for_sampling(n, labels, self.device))

    @torch.no_grad()
    def inpaint(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        labels: Labels | None = None,
        *,
        steps: PositiveInt = 20,
    ) -> torch.Tensor:
        """`images` (in [0, 1]) completed where `mask` is 0 by `steps` rounds of encode, draw z, decode, reset the
        known pixels (Rezende et al., 2014's imputation chain), then the decoder's mean at the last posterior mean;
        the filling starts as uniform noise from `generator`. A conditional VAE needs the images' `labels`."""
        images = check_images(images, self.spec.shape, self.device)
        mask = check_mask(images, mask)
        labels = self.conditioning.for_editing(len(images), labels, self.device)
        x = paste(images, mask, torch.rand(images.shape, generator=generator).to(self.device))
        for _ in range(steps):
            mu, logvar = self.encode(x, labels)
            noise = torch.randn(mu.shape, generator=generator).to(self.device)
            x = paste(images, mask, self.generate(mu + noise * torch.exp(0.5 * logvar), labels))
        return paste(images, mask, self.generate(self.encode(x, labels)[0], labels))

    #: The reconstructions need real images: genlab-sample loads a test batch for them when the data is there.
    grids_use_real_images = True

    @torch.no_grad()
    def image_grids(
        self, batch: torch.Tensor | None, generator: torch.Generator, labels: torch.Tensor | None = None
    ) -> Grids:
        """Reconstructions of `batch`, samples, and a linear path in latent space between the codes of pairs of its
        images (between prior draws when there is no batch: sampling needs no data).

        A conditional VAE reconstructs with the batch's `labels`, draws one row per class (each column one noise
        vector, so only the label changes down a column) and decodes each interpolation with its start's label.
        """
        pairs, steps = 8, 10
        grids = {}
        if batch is not None:
            x = batch[:32].to(self.device)
            labels = None if labels is None else labels[:32].to(self.device)
            ends = self.encode(x, labels)[0]
            reconstructions = self.mean_image(self.decode(ends, labels))
            grids["reconstructions"] = (torch.stack([x, reconstructions], 1).flatten(0, 1), 8)
            pairs = min(pairs, len(x) // 2)
        if self.conditioning.enabled:
            z = torch.randn((8, self.latent_dim), generator=generator).to(self.device)
            images = self.mean_image(self.decode(*self.conditioning.class_grid(z)))
            grids["samples"] = Grid(images, 8, self.conditioning.row_labels())
        else:
            grids["samples"] = (self.sample(64, generator), 8)
        if batch is None:
            ends = torch.randn((2 * pairs, self.latent_dim), generator=generator).to(self.device)
            labels = self.conditioning.for_sampling(2 * pairs, None, self.device)
        t = torch.linspace(0, 1, steps, device=self.device).view(1, steps, 1)
        path = (1 - t) * ends[:pairs].unsqueeze(1) + t * ends[pairs : 2 * pairs].unsqueeze(1)
        path_labels = None if labels is None else labels[:pairs].repeat_interleave(steps)
        grids["interpolation"] = (self.mean_image(self.decode(path.flatten(0, 1), path_labels)), steps)
        return grids
