"""Benchmark: genlab's diffusion model training on MNIST (experiment=ddpm_mnist) against a plain PyTorch loop.

Both train the same UNet (a deep copy of genlab's, taken right after construction, so the same initial weights) on
the same in-memory MNIST images mapped to [-1, 1], in one process, with the same noise schedule
(genlab.models.diffusion_paths.NoiseSchedule, linear, T = 1000), the eps objective (mean squared error of the
predicted noise at a uniform t), Adam with the config's lr, gradient clipping at the config's norm, batch 128 and
the config's EMA of the weights (genlab.models.ema.ema_copy, updated after every step).

- genlab: `Diffusion` + `TorchvisionDataModule` through a Lightning Trainer built from the composed config
  (trainer=cpu), as `genlab.train` builds it (minus progress bar, checkpoints, pictures, sample-quality metrics and
  validation).
- plain: the textbook loop, drawing batches, times and noise from a torch.Generator of its own.

Reported: milliseconds per step (validation excluded; mean, median, min), their ratio genlab / plain (the target
applies to the median, which a few disturbed steps cannot move), and each side's mean loss over the run, a check
that both did the same training (they differ only in their random batches, times and noise).

By default the two alternate in chunks of `--chunk` steps, so load from other processes on the machine hits both
alike; `--schedule sequential` trains genlab fully, then the plain loop.

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data python benchmarks/ddpm_mnist.py --steps 300 --threads 1
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import harness
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from genlab.data.image_datamodule import ImageDataModule
from genlab.models.diffusion import Diffusion
from genlab.models.diffusion_paths import NoiseSchedule, noisy
from genlab.models.ema import ema_copy
from genlab.run.loading import build_model

RATIO_TARGET = 1.10

MILLISECONDS = harness.Unit(key="ms", label="ms/step", digits=1)


def overrides(steps: int) -> list[str]:
    """genlab's own DDPM config (harness.compose_config leaves out what a plain loop does not do either)."""
    return [
        "experiment=ddpm_mnist",
        "trainer=cpu",
        f"trainer.max_steps={steps}",
        "trainer.max_epochs=-1",
        # Neither validation nor FID is timed, and the plain loop does neither.
        "trainer.limit_val_batches=0",
        "metrics=none",
    ]


class PlainLoop:
    """One step: a batch, times t uniform in 1..T, noise, the UNet's prediction of the noise at x_t, the mean squared
    error, backward, gradient clipping, Adam, then the EMA update. Batches, times and noise come from a generator of
    its own, so its steps can run between genlab's without changing the random stream genlab draws from."""

    def __init__(self, net: nn.Module, images: torch.Tensor, cfg: DictConfig, seed: int) -> None:
        self.net = net
        self.images = images
        self.batch_size = int(cfg.data.batch_size)
        self.schedule = NoiseSchedule(cfg.model.schedule, int(cfg.model.timesteps))
        self.optimizer = torch.optim.Adam(net.parameters(), lr=float(cfg.model.optimizer.lr))
        self.clip = cfg.trainer.gradient_clip_val
        self.ema = ema_copy(net, float(cfg.model.ema_decay))
        self.random = torch.Generator().manual_seed(seed)
        self.batches = harness.shuffled_batches(len(images), self.batch_size, self.random)
        self.step_seconds: list[float] = []
        self.losses: list[torch.Tensor] = []

    def steps(self, n: int) -> None:
        timesteps = self.schedule.timesteps
        with torch.enable_grad():
            self.net.train()
            for _ in range(n):
                start = time.perf_counter()
                x0 = self.images[next(self.batches)]
                t = torch.randint(1, timesteps + 1, (len(x0),), generator=self.random)
                noise = torch.randn(x0.shape, generator=self.random)
                a, s = self.schedule.coefficients(t)
                loss = F.mse_loss(self.net(noisy(x0, noise, a, s), t.float() / timesteps), noise)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if self.clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), float(self.clip))
                self.optimizer.step()
                if self.ema is not None:
                    self.ema.update_parameters(self.net)
                self.losses.append(loss.detach())
                self.step_seconds.append(time.perf_counter() - start)


def warm_up(model: Diffusion, images: torch.Tensor, cfg: DictConfig, steps: int = 5) -> None:
    """Untimed steps on a throwaway copy, so neither contender pays first-use costs (allocator, kernels)."""
    PlainLoop(copy.deepcopy(model.net), images, cfg, seed=12345).steps(steps)


def run(args: argparse.Namespace) -> dict[str, Any]:
    datamodule: ImageDataModule
    with harness.genlab_setup([*overrides(args.steps), *args.set], args.seed, args.logger) as (cfg, datamodule):
        # genlab's own code path, as in genlab.training.train.
        model: Diffusion = build_model(cfg, datamodule.spec)

        # The plain loop starts from the very same weights and reads the very same images.
        datamodule.prepare_data()
        datamodule.setup("fit")
        train_images = harness.to_signed_unit(datamodule.splits["train"].images)
        plain = PlainLoop(copy.deepcopy(model.net), train_images, cfg, cfg.seed)
        warm_up(model, train_images, cfg)

        interleaved = args.schedule == "interleaved"
        timer = harness.LossRecordingTimer(then=plain.steps if interleaved else None, chunk=args.chunk)
        trainer = harness.build_trainer(cfg, timer, model, datamodule)
        trainer.fit(model, datamodule=datamodule)
        plain.steps(len(timer.step_seconds) - len(plain.step_seconds))

    genlab = harness.step_summary(MILLISECONDS, timer.step_seconds, timer.losses)
    baseline = harness.step_summary(MILLISECONDS, plain.step_seconds, plain.losses)
    return harness.comparison(
        MILLISECONDS,
        genlab,
        baseline,
        trainer,
        timer,
        steps=args.steps,
        seed=args.seed,
        schedule=args.schedule,
        chunk=args.chunk,
        logger=args.logger,
        overrides=args.set,
        train_images=len(train_images),
        batch_size=int(cfg.data.batch_size),
        mean_loss_gap=genlab["mean_loss"] - baseline["mean_loss"],
    )


def report(numbers: dict[str, Any]) -> None:
    harness.report_steps(
        numbers,
        MILLISECONDS,
        f"DDPM on MNIST: {numbers['steps']} steps of batch {numbers['batch_size']}",
        ("mean loss", "mean_loss", "mean_loss_gap", 4),
        notes=[f"torch threads: {numbers['torch_threads']}"],
        ratio_target=RATIO_TARGET,
        checks=[],
    )


def main(argv: list[str] | None = None) -> None:
    args = harness.parse_args(__doc__, "--steps", 300, argv, extra={**harness.CHUNK_OPTION, **harness.SET_OPTION})
    harness.execute(args, lambda: run(args), report)


if __name__ == "__main__":
    main()
