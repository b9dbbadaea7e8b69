"""Denoising diffusion (Ho et al., 2020) and flow matching (Lipman et al., 2023; Liu et al., 2023): a net learns to
undo noise added to images; samplers run it from pure noise to images."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.likelihood import bits_per_dim
from genlab.models.base import GenerativeModel, OptimizerFactory, SchedulerFactory, build_net
from genlab.models.diffusion_bound import negative_elbo
from genlab.models.diffusion_paths import LinearPath, NoiseSchedule, Objective, ScheduleKind, estimates, noisy, target
from genlab.models.diffusion_samplers import Sampler, SamplerName, make_sampler
from genlab.models.ema import ema_copy
from genlab.models.gan import slerp
from genlab.settings import PositiveInt, UnitFraction

Batch = tuple[torch.Tensor, torch.Tensor]


class Diffusion(GenerativeModel):
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
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        spec.require_kind("image", "the diffusion model")
        self.spec = spec
        self.objective = objective
        self.path = LinearPath() if objective == "flow" else NoiseSchedule(schedule, timesteps)
        self.sampler_name = sampler
        make_sampler(sampler, objective, self.path, "model.sampler")  # one of another objective fails here
        self.path.check_steps(sample_steps, "model.sample_steps")
        self.path.check_steps(eval_steps, "model.eval_steps")
        self.sample_steps = sample_steps
        self.eval_steps = eval_steps
        self.bpd_timesteps = bpd_timesteps
        self.net = build_net(net, "image", "the diffusion model", shape=spec.shape)
        self.net_ema = ema_copy(self.net, ema_decay)
        low, high = spec.value_range
        self.register_buffer("data_low", torch.tensor(float(low)), persistent=False)
        self.register_buffer("data_span", torch.tensor(float(high - low)), persistent=False)

    # -- the model ------------------------------------------------------------------------------------------------

    @property
    def sampling_net(self) -> nn.Module:
        """The net that evaluation and sampling use: the EMA copy when there is one."""
        return self.net_ema.module if self.net_ema is not None else self.net

    def to_model_range(self, images: torch.Tensor) -> torch.Tensor:
        """Data values to [-1, 1]."""
        return (images - self.data_low) / self.data_span * 2 - 1

    @staticmethod
    def to_images(x: torch.Tensor) -> torch.Tensor:
        """[-1, 1] to images in [0, 1]."""
        return ((x.float() + 1) / 2).clamp(0, 1)

    def loss(self, x0: torch.Tensor, net: nn.Module) -> torch.Tensor:
        """The objective's mean squared error at random times and noise (from the global random stream)."""
        t = self.path.training_times(len(x0), x0.device)
        noise = torch.randn_like(x0)
        a, s = self.path.coefficients(t)
        prediction = net(noisy(x0, noise, a, s), self.path.net_time(t))
        return F.mse_loss(prediction.float(), target(self.objective, x0.float(), noise.float(), a, s))

    def denoiser(self, net: nn.Module) -> Callable[[torch.Tensor, float], tuple[torch.Tensor, torch.Tensor]]:
        """(x_t, t) -> the net's estimates of x_0 and eps, for the samplers (t one time for the whole batch)."""

        def denoise(x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
            times = torch.full((len(x),), t, device=x.device)
            a, s = self.path.coefficients(times)
            return estimates(self.objective, x, net(x, self.path.net_time(times)), a, s)

        return denoise

    def sampler(self, name: str | None) -> Sampler:
        return make_sampler(name or self.sampler_name, self.objective, self.path)

    def resolve_steps(self, steps: int | None) -> int:
        """`steps`, checked against the schedule; by default `eval_steps` while a trainer fits or validates (val/fid
        and pictures stay cheap and comparable across epochs and with genlab-eval), `sample_steps` when testing and
        outside training."""
        if steps is None:
            trainer = self._trainer
            steps = self.eval_steps if trainer is not None and not trainer.testing else self.sample_steps
        self.path.check_steps(steps)
        return steps

    def noise(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """x_T for n images, from `generator` (a CPU generator, so a seed means the same noise on any device)."""
        return torch.randn((n, *self.spec.shape), generator=generator).to(self.device)

    def trajectory(
        self, noise: torch.Tensor, steps: int, sampler: str | None = None, generator: torch.Generator | None = None
    ) -> Iterator[torch.Tensor]:
        """x after each of the sampler's `steps` steps from `noise` (the last in [-1, 1])."""
        return self.sampler(sampler).trajectory(self.denoiser(self.sampling_net), noise, steps, generator)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        steps: PositiveInt | None = None,
        sampler: SamplerName | None = None,
        labels: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """n images in [0, 1] by `sampler` (default: the model's) in `steps` steps (default: see `resolve_steps`);
        pass a seeded CPU generator for the same images every time (every sampler draws from it alone)."""
        if labels is not None:
            raise ConfigError("this diffusion model is unconditional: it takes no class labels")
        *_, x = self.trajectory(self.noise(n, generator), self.resolve_steps(steps), sampler, generator)
        return self.to_images(x)

    # -- training ---------------------------------------------------------------------------------------------------

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        loss = self.loss(self.to_model_range(batch[0]), self.net)
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

    def estimate_x0(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The sampling net's estimate of x_0 at integer times t (N,), clipped to [-1, 1] as the samplers do."""
        a, s = self.path.coefficients(t)
        x0, _ = estimates(self.objective, x_t, self.sampling_net(x_t, self.path.net_time(t)), a, s)
        return x0.clamp(-1, 1)

    def _evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        x0 = self.to_model_range(batch[0])
        values = {}
        with self.fixed_noise(batch_idx):
            values[f"{split}/loss"] = self.loss(x0, self.sampling_net)
            if split == "test" and isinstance(self.path, NoiseSchedule):
                nats = negative_elbo(self.path, self.estimate_x0, x0, self.bpd_timesteps).mean()
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
        steps: PositiveInt | None = None,
        sampler: SamplerName | None = None,
    ) -> dict[str, tuple[torch.Tensor, int]]:
        """Fixed-noise samples; the trajectory x_t of 8 of them (rows; columns from noise to image); images from
        spherical interpolations between 8 pairs of initial noises, by the objective's deterministic sampler."""
        steps = self.resolve_steps(steps)
        noise = self.noise(64, generator)
        snapshots, rows = 10, 8
        kept = {round(i * steps / (snapshots - 1)) for i in range(snapshots)}  # step numbers, 0 = the noise
        chosen = [noise[:rows]]
        for step, x in enumerate(self.trajectory(noise, steps, sampler, generator), start=1):
            if step in kept:
                chosen.append(x[:rows])
        trajectory = self.to_images(torch.stack(chosen, 1).flatten(0, 1))

        pairs, points = 8, 10
        ends = self.noise(2 * pairs, generator).flatten(1)
        between = slerp(ends[:pairs], ends[pairs:], torch.linspace(0, 1, points, device=self.device))
        deterministic = "euler" if self.objective == "flow" else "ddim"
        *_, interpolated = self.trajectory(between.reshape(-1, *self.spec.shape), steps, deterministic)
        return {
            "samples": (self.to_images(x), 8),
            "trajectory": (trajectory, len(chosen)),
            "interpolation": (self.to_images(interpolated), points),
        }
