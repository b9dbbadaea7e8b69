"""Benchmark: genlab's DCGAN training on MNIST against a plain PyTorch loop, and optionally GAN sample quality.

Speed is measured on experiment=dcgan_mnist; quality (FID, KID) on whole genlab-train runs of DCGAN and WGAN-GP.

Speed: both train the same generator G and discriminator D (deep copies of genlab's, taken right after construction,
so the same initial weights) on the same in-memory MNIST images mapped to [-1, 1], in one process, with the config's
loss (non-saturating, from genlab.models.gan_losses), an Adam(2e-4, betas (0.5, 0.999)) for each net, batch 128 and
an EMA of G's weights (genlab.models.ema.ema_copy, the model's own averaging, decay 0.999). One
step is one batch: a D step, then a G step on the same fakes (n_critic = 1, as GAN.training_step does), then the EMA
update.

- genlab: `GAN` + `MNISTDataModule` through a Lightning Trainer built from the composed config (trainer=cpu), as
  `genlab.train` builds it (minus progress bar, checkpoints, pictures, sample-quality metrics and validation).
- plain: the textbook loop (pytorch/examples' dcgan, with D frozen during G's backward as genlab does), shuffling
  and drawing noise from a torch.Generator of its own.

Reported: milliseconds per step (validation excluded; mean, median, min), their ratio genlab / plain (the target
applies to the median, which a few disturbed steps cannot move), and each side's mean D + G loss over the run, a
check that both did the same training (the two differ only in their random batches and noise).

By default the two alternate in chunks of `--chunk` steps (the plain loop runs a chunk right after each chunk of
genlab steps), so load from other processes on the machine hits both alike; `--schedule sequential` trains genlab
fully, then the plain loop. `--steps 0` skips the speed part.

Quality (`--fid-epochs E`, E > 0): `genlab-train experiment=dcgan_mnist` and `experiment=wgan_gp_mnist`, E epochs
each, as subprocesses (run folders under `--fid-dir`); reported from each run's metrics.json: val/fid, test/fid,
test/kid, test/class_entropy (classifier features; see conf/metrics/sample_quality.yaml) and the sample counts
behind them.

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data python benchmarks/dcgan_mnist.py --steps 300 --threads 1
    GENLAB_DATA_DIR=../shared/data python benchmarks/dcgan_mnist.py --steps 0 --fid-epochs 5
"""

from __future__ import annotations

import argparse
import copy
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
import torch
from omegaconf import DictConfig
from rich.table import Table
from torch import nn

from genlab.data.image_datamodule import ImageDataModule
from genlab.models.ema import ema_copy
from genlab.models.gan import GAN
from genlab.models.gan_losses import discriminator_loss, generator_loss
from genlab.run.loading import build_model

RATIO_TARGET = 1.15

MILLISECONDS = harness.Unit(key="ms", label="ms/step", digits=2)

QUALITY_EXPERIMENTS = ("dcgan_mnist", "wgan_gp_mnist")
QUALITY_METRICS = ("val/fid", "test/fid", "test/kid", "test/kid_std", "test/class_entropy")


def overrides(steps: int) -> list[str]:
    """genlab's own DCGAN config (harness.compose_config leaves out what a plain loop does not do either)."""
    return [
        "experiment=dcgan_mnist",
        "trainer=cpu",
        # Every batch makes a D and a G optimizer step and Lightning counts both (see GAN), so 2 per timed step;
        # max_steps alone ends the run, mid-epoch or not.
        f"trainer.max_steps={2 * steps}",
        "trainer.max_epochs=-1",
        # Neither validation nor FID is timed, and the plain loop does neither.
        "trainer.limit_val_batches=0",
        "metrics=none",
        # pytorch/examples' loop has no MSGAN term (which costs G a second pass per step).
        "model.mode_seeking_weight=0",
    ]


def adam(parameters: Any, settings: DictConfig) -> torch.optim.Adam:
    """Adam with the lr and betas of one of the model's optimizer configs."""
    beta1, beta2 = (float(beta) for beta in settings.betas)
    return torch.optim.Adam(parameters, lr=float(settings.lr), betas=(beta1, beta2))


class PlainLoop:
    """pytorch/examples' dcgan loop on genlab's nets: batch, fakes, D step, G step on the same fakes, EMA update.

    Batch order and noise come from a generator of its own, so its steps can run between genlab's without changing
    the random stream genlab draws from.
    """

    def __init__(
        self, generator: nn.Module, discriminator: nn.Module, images: torch.Tensor, cfg: DictConfig, seed: int
    ) -> None:
        self.generator = generator
        self.discriminator = discriminator
        self.images = images
        self.batch_size = int(cfg.data.batch_size)
        self.latent_dim = int(cfg.model.latent_dim)
        self.loss = str(cfg.model.loss)
        self.g_optimizer = adam(generator.parameters(), cfg.model.optimizer)
        self.d_optimizer = adam(discriminator.parameters(), cfg.model.discriminator_optimizer)
        self.ema = ema_copy(generator, float(cfg.model.ema_decay))
        self.random = torch.Generator().manual_seed(seed)
        self.batches = harness.shuffled_batches(len(images), self.batch_size, self.random)
        self.step_seconds: list[float] = []
        self.losses: list[torch.Tensor] = []

    def steps(self, n: int) -> None:
        with torch.enable_grad():
            self.generator.train()
            self.discriminator.train()
            for _ in range(n):
                start = time.perf_counter()
                real = self.images[next(self.batches)]
                fake = self.generator(torch.randn(len(real), self.latent_dim, generator=self.random))

                d_loss = discriminator_loss(self.loss, self.discriminator(real), self.discriminator(fake.detach()))
                self.d_optimizer.zero_grad(set_to_none=True)
                d_loss.backward()
                self.d_optimizer.step()

                self.discriminator.requires_grad_(False)  # G's backward needs no gradients for D's weights
                g_loss = generator_loss(self.loss, self.discriminator(fake))
                self.g_optimizer.zero_grad(set_to_none=True)
                g_loss.backward()
                self.g_optimizer.step()
                self.discriminator.requires_grad_(True)
                self.ema.update_parameters(self.generator)

                self.losses.append(d_loss.detach() + g_loss.detach())
                self.step_seconds.append(time.perf_counter() - start)


def warm_up(model: GAN, images: torch.Tensor, cfg: DictConfig, steps: int = 20) -> None:
    """Untimed steps on throwaway copies, so neither contender pays first-use costs (allocator, kernels)."""
    PlainLoop(copy.deepcopy(model.generator), copy.deepcopy(model.discriminator), images, cfg, seed=12345).steps(steps)


def speed(steps: int, seed: int, logger: str, schedule: str, chunk: int, extra: list[str]) -> dict[str, Any]:
    datamodule: ImageDataModule
    with harness.genlab_setup([*overrides(steps), *extra], seed, logger) as (cfg, datamodule):
        # genlab's own code path, as in genlab.training.train.
        model: GAN = build_model(cfg, datamodule.spec)

        # The plain loop starts from the very same weights and reads the very same images.
        datamodule.prepare_data()
        datamodule.setup("fit")
        train_images = harness.to_signed_unit(datamodule.splits["train"].images)
        generator, discriminator = copy.deepcopy(model.generator), copy.deepcopy(model.discriminator)
        plain = PlainLoop(generator, discriminator, train_images, cfg, cfg.seed)
        warm_up(model, train_images, cfg)

        timer = harness.LossRecordingTimer(then=plain.steps if schedule == "interleaved" else None, chunk=chunk)
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
        steps=steps,
        seed=seed,
        schedule=schedule,
        chunk=chunk,
        logger=logger,
        overrides=extra,
        train_images=len(train_images),
        batch_size=int(cfg.data.batch_size),
        mean_loss_gap=genlab["mean_loss"] - baseline["mean_loss"],
    )


def quality(epochs: int, seed: int, threads: int | None, runs_dir: Path, extra: list[str]) -> dict[str, Any]:
    """Train each of QUALITY_EXPERIMENTS with genlab-train for `epochs` epochs; their sample-quality numbers."""
    runs = harness.train_experiments(QUALITY_EXPERIMENTS, epochs, seed, threads, runs_dir, extra, QUALITY_METRICS)
    return {"epochs": epochs, "runs": runs}


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.steps <= 0 and args.fid_epochs <= 0:
        raise SystemExit("dcgan_mnist.py: nothing to run; give --steps N (speed) and/or --fid-epochs E (quality)")
    numbers: dict[str, Any] = {}
    if args.steps > 0:
        numbers.update(speed(args.steps, args.seed, args.logger, args.schedule, args.chunk, args.set))
    if args.fid_epochs > 0:
        runs_dir = args.fid_dir or Path("outputs/benchmarks/dcgan_mnist") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        numbers["quality"] = quality(args.fid_epochs, args.seed, args.threads, runs_dir.resolve(), args.fid_override)
    return numbers


def report_speed(numbers: dict[str, Any]) -> None:
    harness.report_steps(
        numbers,
        MILLISECONDS,
        f"DCGAN on MNIST: {numbers['steps']} steps of batch {numbers['batch_size']}",
        ("mean D+G loss", "mean_loss", "mean_loss_gap", 3),
        notes=[f"torch threads: {numbers['torch_threads']}"],
        ratio_target=RATIO_TARGET,
        checks=[],
    )


def report_quality(quality: dict[str, Any]) -> None:
    """One row per experiment: the metrics.json numbers and the sample counts behind them."""
    runs = quality["runs"]
    features = {str((result["sample_quality"] or {}).get("features")) for result in runs.values()}
    table = Table(title=f"Sample quality after {quality['epochs']} epochs ({', '.join(sorted(features))} features)")
    columns = ("val FID", "test FID", "test KID", "KID std", "class H", "real val/test", "fake", "KID n", "min")
    for column in ("", *columns):
        table.add_column(column, justify="right" if column else "left")
    for experiment, result in runs.items():
        counts = result["sample_quality"] or {}
        table.add_row(
            experiment,
            f"{result['val/fid']:.2f}",
            f"{result['test/fid']:.2f}",
            f"{result['test/kid']:.4f}",
            f"{result['test/kid_std']:.4f}",
            f"{result['test/class_entropy']:.3f}",
            f"{counts.get('num_real_val')}/{counts.get('num_real_test')}",
            str(counts.get("num_fake")),
            str(counts.get("kid_subset_size")),
            f"{result['wall_seconds'] / 60:.1f}",
        )
    console = harness.console()
    console.print(table)
    console.print("class H: entropy (nats) of the classes predicted for the fakes; ln 10 = 2.303 when all are even")
    for result in runs.values():
        console.print(f"{result['run_dir']}: {result['command']}")


def report(numbers: dict[str, Any]) -> None:
    if "genlab" in numbers:
        report_speed(numbers)
    if "quality" in numbers:
        report_quality(numbers["quality"])


def main(argv: list[str] | None = None) -> None:
    extra = {
        **harness.CHUNK_OPTION,
        **harness.SET_OPTION,
        "--fid-epochs": {"type": int, "default": 0, "help": "epochs of each quality run (0: no quality runs)"},
        "--fid-dir": {
            "type": Path,
            "default": None,
            "help": "where the quality runs' folders go (default: outputs/benchmarks/dcgan_mnist/<date>_<time>)",
        },
        "--fid-override": {
            "action": "append",
            "default": [],
            "help": "an extra genlab-train override for both quality runs (repeatable)",
        },
    }
    args = harness.parse_args(__doc__, "--steps", 300, argv, extra=extra)
    harness.execute(args, lambda: run(args), report)


if __name__ == "__main__":
    main()
