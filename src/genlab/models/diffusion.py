"""Denoising diffusion (Ho et al., 2020) and flow matching (Lipman et al., 2023; Liu et al., 2023): a net learns to
undo noise added to images; samplers run it from pure noise to images. Class-conditional with classifier-free guidance
(Ho & Salimans, 2022)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.masks import check_images, check_mask, check_strength, paste
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.likelihood import bits_per_dim
from genlab.models.base import GenerativeModel, OptimizerFactory, SchedulerFactory, build_net
from genlab.models.conditioning import ClassConditioning, Labels
from genlab.models.contracts import ConditionalModel, Editor, Grid, Grids, ImageGenerator, Inpainter
from genlab.models.diffusion_bound import negative_elbo
from genlab.models.diffusion_paths import LinearPath, NoiseSchedule, Objective, ScheduleKind, estimates, noisy, target
from genlab.models.diffusion_samplers import Sampler, SamplerName, make_sampler
from genlab.models.ema import ema_copy
from genlab.models.guidance import drop_labels, guided_prediction
from genlab.models.images import SignedImageRange, slerp
from genlab.models.inpainting import repaint, sdedit
from genlab.settings import GuidanceScale, PositiveInt, UnitFraction
from genlab.upstream import attached_trainer

Batch = tuple[torch.Tensor, torch.Tensor]


class Diffusion(GenerativeModel, ImageGenerator, ConditionalModel, Inpainter, Editor, SignedImageRange):
    """A denoiser `net(x_t, t)` trained with one of three objectives; judged by `val/fid` (lower is better).

    - `objective=eps`: DDPM's noise prediction (L_simple); `v`: v-prediction; both on a discrete-time noise
      schedule (`schedule=linear|cosine`, `timesteps` steps, t drawn uniformly). `flow`: flow matching on the
      straight path x_t = (1 - t) x_0 + t eps in continuous time, the net predicting eps - x_0 (`schedule` and
      `timesteps` do not apply).
    - The loss is the mean squared error of the prediction, in float32 whatever the precision. Images are mapped
      to [-1, 1]; `sample` returns [0, 1] like every image model.
    - Samplers (`genlab.models.diffusion_samplers`): `ddim` (default for eps, v) or `ddpm`; `euler` for flow.
      Validation FID and pictures during training use `eval_steps` sampler steps; test FID and sampling outside
      training (genlab-sample, `genlab.load_run`) use `sample_steps`. Both are overridable per call of `sample`.
    - An EMA of the net's weights (`ema_decay`, 0 = off) is what samples, FID, validation and test losses and the
      bound use; it is saved in checkpoints.

    Logged: `train/loss`, `val/loss`, `test/loss` (the objective's loss, with a fixed seed at evaluation) and, for
    eps and v, `test/bpd`: the discrete-time variational bound on 8-bit pixel values in bits per dimension
    (`genlab.models.diffusion_bound`), estimated with `bpd_timesteps` stratified terms per image (None: all T).
    Flow matching's likelihood needs an ODE solve with a trace estimator; it is not computed.

    `conditional`: class-conditional generation with classifier-free guidance (`genlab.models.guidance`). The net
    gets the label, and one class more than the data has: the null label, which replaces each training label with
    probability `label_dropout`, so the same net also learns the unconditional model. Sampling uses the guidance
    scale `guidance` (w; 0: the conditional model, one net evaluation per step; w != 0: two, batched into one forward
    pass) unless a call of `sample` gives another; val/fid, test/fid, cond_acc and the pictures use the model's.
    The validation and test losses are the training objective (labels dropped alike, with the fixed seed); `test/bpd`
    bounds -log p(x | y) with the conditional net, without guidance (a guided model defines no likelihood).
    """

    judged_metric = "val/fid"
    judged_mode = "min"

    def __init__(
        self,
        spec: DataSpec,
        net: Callable[..., nn.Module],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        objective: Objective = "eps",
        schedule: ScheduleKind = "linear",
        timesteps: PositiveInt = 1000,
        sampler: SamplerName | None = None,
        sample_steps: PositiveInt = 100,
        eval_steps: PositiveInt = 20,
        ema_decay: UnitFraction = 0.9999,
        bpd_timesteps: PositiveInt | None = 16,
        conditional: bool = False,
        label_dropout: UnitFraction = 0.1,
        guidance: GuidanceScale = 0.0,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        spec.require_kind("image", "the diffusion model")
        self.spec = spec
        self.conditioning = ClassConditioning.of(spec, conditional, "diffusion model")
        if guidance != 0 and not conditional:
            raise ConfigError(
                f"model.guidance={guidance} steers a class-conditional diffusion model, and this one is unconditional; "
                f"set model.conditional=true (labelled data) or leave model.guidance=0"
            )
        #: The label that stands for "no class": one past the data's classes.
        self.null_label = self.conditioning.num_classes
        self.label_dropout = label_dropout
        self.guidance = guidance
        self.objective = objective
        self.path = LinearPath() if objective == "flow" else NoiseSchedule(schedule, timesteps)
        self.sampler_name = sampler
        make_sampler(sampler, objective, self.path, "model.sampler")  # one of another objective fails here
        self.path.check_steps(sample_steps, "model.sample_steps")
        self.path.check_steps(eval_steps, "model.eval_steps")
        self.sample_steps = sample_steps
        self.eval_steps = eval_steps
        self.bpd_timesteps = bpd_timesteps
        classes = {"num_classes": self.null_label + 1} if self.conditioning.enabled else {}
        self.net = build_net(net, "image", "the diffusion model", shape=spec.shape, **classes)
        self.net_ema = ema_copy(self.net, ema_decay)
        self.register_data_range(spec)

    # -- the model ------------------------------------------------------------------------------------------------

    @property
    def sampling_net(self) -> nn.Module:
        """The net that evaluation and sampling use: the EMA copy when there is one."""
        return self.net_ema.module if self.net_ema is not None else self.net

    @staticmethod
    def to_images(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] to images in [0, 1]."""
        return ((x.float() + 1) / 2).clamp(0, 1)

    def predict(
        self, net: nn.Module, x: torch.Tensor, time: torch.Tensor, labels: torch.Tensor | None, guidance: float = 0.0
    ) -> torch.Tensor:
        """The net's prediction at x_t and the net's time: for `labels` with `guidance` when conditional."""
        if labels is None:
            return net(x, time)
        return guided_prediction(net, x, time, labels, guidance, self.null_label)

    def loss(self, x0: torch.Tensor, net: nn.Module, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The objective's mean squared error at random times and noise, a conditional model's labels dropped with
        probability `label_dropout` (all from the global random stream)."""
        t = self.path.training_times(len(x0), x0.device)
        noise = torch.randn_like(x0)
        a, s = self.path.coefficients(t)
        if labels is not None:
            labels = drop_labels(labels, self.label_dropout, self.null_label)
        prediction = self.predict(net, noisy(x0, noise, a, s), self.path.net_time(t), labels)
        return F.mse_loss(prediction.float(), target(self.objective, x0.float(), noise.float(), a, s))

    def denoiser(
        self, net: nn.Module, labels: torch.Tensor | None = None, guidance: float = 0.0
    ) -> Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]:
        """(x_t, t) -> the net's estimates of x_0 and eps, for the samplers (t one time for the whole batch), guided
        towards `labels` when conditional."""

        def denoise(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
            times = torch.full((len(x),), t, device=x.device)
            a, s = self.path.coefficients(times)
            return estimates(self.objective, x, self.predict(net, x, self.path.net_time(times), labels, guidance), a, s)

        return denoise

    def sampler(self, name: str | None) -> Sampler:
        return make_sampler(name or self.sampler_name, self.objective, self.path)

    def resolve_steps(self, steps: int | None) -> int:
        """`steps`, checked against the schedule; by default `eval_steps` while a trainer fits or validates (val/fid
        and pictures stay cheap and comparable across epochs and with genlab-eval), `sample_steps` when testing and
        outside training."""
        if steps is None:
            trainer = attached_trainer(self)
            steps = self.eval_steps if trainer is not None and not trainer.testing else self.sample_steps
        self.path.check_steps(steps)
        return steps

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T for n images, from `generator` (a CPU generator, so a seed means the same noise on any device)."""
        return torch.randn((n, *self.spec.shape), generator=generator).to(self.device)

    def resolve_guidance(self, guidance: float | None) -> float:
        """`guidance`, by default the model's; an unconditional model takes none."""
        if guidance is not None and not self.conditioning.enabled:
            raise ConfigError(
                f"this diffusion model is unconditional: guidance={guidance} steers a class-conditional one; train "
                f"with model.conditional=true to use classifier-free guidance"
            )
        return self.guidance if guidance is None else guidance

    def trajectory(
        self,
        noise: torch.Tensor,
        steps: int,
        sampler: str | None = None,
        generator: torch.Generator | None = None,
        labels: torch.Tensor | None = None,
        guidance: float = 0.0,
    ) -> Iterator[torch.Tensor]:
        """x after each of the sampler's `steps` steps from `noise` (the last in [-1, 1]), for `labels` with
        `guidance` when conditional."""
        denoise = self.denoiser(self.sampling_net, labels, guidance)
        return self.sampler(sampler).trajectory(denoise, noise, steps, generator)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        steps: PositiveInt | None = None,
        sampler: SamplerName | None = None,
        labels: Labels | None = None,
        guidance: GuidanceScale | None = None,
    ) -> torch.Tensor:
        """n images in [0, 1] by `sampler` (default: the model's) in `steps` steps (default: see `resolve_steps`);
        pass a seeded CPU generator for the same images every time (every sampler draws from it alone). A conditional
        model draws them for `labels` (one class, or one per image; by default spread evenly over the classes) with
        the guidance scale `guidance` (default: the model's)."""
        if labels is not None and not self.conditioning.enabled:
            raise ConfigError(
                "this diffusion model is unconditional: it takes no class labels; train with model.conditional=true "
                "to choose the class"
            )
        guidance = self.resolve_guidance(guidance)
        labels = self.conditioning.for_sampling(n, labels, self.device)
        noise = self.noise(n, generator)
        *_, x = self.trajectory(noise, self.resolve_steps(steps), sampler, generator, labels, guidance)
        return self.to_images(x)

    # -- image editing (genlab.models.inpainting) -------------------------------------------------------------------

    def editing_labels(self, n: int, labels: Labels | None) -> torch.Tensor | None:
        """The labels an edit is steered to: those given (conditional models only), else the null label, so a
        conditional model completes an image with its unconditional half and keeps whatever class the image shows."""
        if labels is None:
            return torch.full((n,), self.null_label, device=self.device) if self.conditioning.enabled else None
        return self.conditioning.for_sampling(n, labels, self.device)

    @torch.no_grad()
    def inpaint(
        self,
        images: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        labels: Labels | None = None,
        *,
        steps: PositiveInt | None = None,
        sampler: SamplerName | None = None,
        guidance: GuidanceScale | None = None,
        jump_length: PositiveInt = 5,
        resamplings: PositiveInt = 3,
    ) -> torch.Tensor:
        """RePaint: `images` (in [0, 1]) completed where `mask` is 0, in `steps` sampler steps, each stretch of
        `jump_length` steps sampled `resamplings` times (1: plain replacement, cheapest and least coherent); the
        known pixels come back exactly. Labels and guidance as in `sample` (none: the image's own class)."""
        images = check_images(images, self.spec.shape, self.device)
        mask = check_mask(images, mask)
        denoise = self.denoiser(
            self.sampling_net, self.editing_labels(len(images), labels), self.resolve_guidance(guidance)
        )
        x = repaint(
            self.path,
            self.sampler(sampler).step,
            denoise,
            images * 2 - 1,
            mask,
            self.resolve_steps(steps),
            generator,
            jump_length,
            resamplings,
        )
        return paste(images, mask, self.to_images(x))

    @torch.no_grad()
    def edit(
        self,
        images: torch.Tensor,
        strength: float,
        generator: torch.Generator | None = None,
        labels: Labels | None = None,
        guidance: GuidanceScale | None = None,
        *,
        steps: PositiveInt | None = None,
        sampler: SamplerName | None = None,
    ) -> torch.Tensor:
        """SDEdit: `images` (in [0, 1]) noised `strength` of the way to noise and denoised, towards `labels` with
        `guidance` when given (turn a 3 into an 8 with strength about 0.6 and guidance about 2)."""
        strength = check_strength(strength)
        images = check_images(images, self.spec.shape, self.device)
        denoise = self.denoiser(
            self.sampling_net, self.editing_labels(len(images), labels), self.resolve_guidance(guidance)
        )
        x = sdedit(
            self.path,
            self.sampler(sampler).step,
            denoise,
            images * 2 - 1,
            strength,
            self.resolve_steps(steps),
            generator,
        )
        return images if strength == 0 else self.to_images(x)

    # -- training ---------------------------------------------------------------------------------------------------

    def training_loss(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.to_model_range(batch[0]), self.net, self.conditioning.of_batch(batch[1]))
        self.log_training_step(loss, lambda: {})
        return loss

    def optimizer_step(
        self, epoch: int, batch_idx: int, optimizer: Any, optimizer_closure: Callable[[], Any] | None = None
    ) -> None:
        """The optimizer's step, then the EMA's (only on batches that step, e.g. under gradient accumulation)."""
        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        if self.net_ema is not None:
            self.net_ema.update_parameters(self.net)

    # -- evaluation -------------------------------------------------------------------------------------------------

    def estimate_x0(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The sampling net's estimate of x_0 at integer times t (N,), for `labels` when conditional (unguided),
        clipped to [-1, 1] as the samplers do."""
        a, s = self.path.coefficients(t)
        prediction = self.predict(self.sampling_net, x_t, self.path.net_time(t), labels)
        x0, _ = estimates(self.objective, x_t, prediction, a, s)
        return x0.clamp(-1, 1)

    def _evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        x0 = self.to_model_range(batch[0])
        labels = self.conditioning.of_batch(batch[1])
        values = {}
        with self.fixed_noise(batch_idx):
            values[f"{split}/loss"] = self.loss(x0, self.sampling_net, labels)
            if split == "test" and isinstance(self.path, NoiseSchedule):
                estimate_x0 = partial(self.estimate_x0, labels=labels)
                nats = negative_elbo(self.path, estimate_x0, x0, self.bpd_timesteps).mean()
                values["test/bpd"] = bits_per_dim(nats, self.spec.num_dims)
        self.log_dict(values, batch_size=len(x0), sync_dist=True)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    # -- pictures ---------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def image_grids(
        self,
        batch: torch.Tensor | None,
        generator: torch.Generator,
        *,
        labels: torch.Tensor | None = None,
        steps: PositiveInt | None = None,
        sampler: SamplerName | None = None,
        guidance: GuidanceScale | None = None,
    ) -> Grids:
        """Fixed-noise samples; the trajectory x_t of 8 of them (rows; columns from noise to image); images from
        spherical interpolations between 8 pairs of initial noises, by the objective's deterministic sampler.

        A conditional model draws one row of samples per class (each column one noise vector, so only the label
        changes down a column), the trajectory of each class's first sample, and interpolates row i within class
        i mod K, all with its guidance scale (or `guidance`); the data batch and its `labels` are not used."""
        steps = self.resolve_steps(steps)
        guidance = self.resolve_guidance(guidance)
        if self.conditioning.enabled:
            noise, classes = self.conditioning.class_grid(self.noise(8, generator))
            rows = slice(0, None, 8)  # the first noise vector, for each class
        else:
            noise, classes, rows = self.noise(64, generator), None, slice(0, 8)
        snapshots = 10
        kept = {round(i * steps / (snapshots - 1)) for i in range(snapshots)}  # step numbers, 0 = the noise
        chosen = [noise[rows]]
        for step, x in enumerate(self.trajectory(noise, steps, sampler, generator, classes, guidance), start=1):
            if step in kept:
                chosen.append(x[rows])
        trajectory = self.to_images(torch.stack(chosen, 1).flatten(0, 1))

        pairs, points = 8, 10
        ends = self.noise(2 * pairs, generator).flatten(1)
        between = slerp(ends[:pairs], ends[pairs:], torch.linspace(0, 1, points, device=self.device))
        path_classes = self.conditioning.for_sampling(pairs, None, self.device)
        if path_classes is not None:
            path_classes = path_classes.repeat_interleave(points)
        deterministic = "euler" if self.objective == "flow" else "ddim"
        path = between.reshape(-1, *self.spec.shape)
        *_, interpolated = self.trajectory(path, steps, deterministic, None, path_classes, guidance)
        rows = self.conditioning.row_labels() if self.conditioning.enabled else None
        return {
            "samples": Grid(self.to_images(x), 8, rows),
            "trajectory": Grid(trajectory, len(chosen), rows),
            "interpolation": (self.to_images(interpolated), points),
        }
