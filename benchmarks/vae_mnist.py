"""Benchmark: genlab's VAE training (experiment=vae_mnist_examples) against a plain PyTorch loop.

Both train the pytorch/examples VAE (784-400-20 MLP, Bernoulli likelihood, Adam 1e-3, batch 128) on the same
in-memory MNIST tensors, in one process, for the same number of epochs from the same seed and initial weights.
Reported: seconds per training epoch (validation excluded; mean, median, min), their ratio genlab / plain
(the target applies to the median, which one disturbed epoch cannot move), and the test loss (negative ELBO,
nats per image, one sample of z) of both.

By default the two alternate epoch by epoch (a plain epoch runs right after each genlab training epoch, with
its own random stream), so load from other processes on the machine hits both alike; `--schedule sequential`
trains genlab fully, then the plain loop.

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data python benchmarks/vae_mnist.py --epochs 10
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from rich.console import Console
from rich.table import Table
from torch import nn

from genlab.config import config_dir
from genlab.data.image_datamodule import ImageDataModule
from genlab.models.vae import VAE
from genlab.train import instantiate_each

RATIO_TARGET = 1.15
LOSS_GAP_TARGET = 1.5

#: Callbacks that do no training work (progress display, checkpoints, pictures): left out of the timed run
#: (with trainer.enable_checkpointing=false, so Lightning adds no default checkpoint either).
NOT_TRAINING = (ProgressBar, ModelCheckpoint)
PICTURE_MODULES = ("genlab.callbacks.samples",)


def compose_config(epochs: int, seed: int, output_dir: Path, logger: str) -> DictConfig:
    """genlab's own config for the pytorch/examples VAE, minus what a plain loop does not do either."""
    overrides = [
        "experiment=vae_mnist_examples",
        "data=mnist",
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false",
        "++trainer.enable_checkpointing=false",
        f"seed={seed}",
        f"paths.output_dir={output_dir}",
        # The IWAE bound is test-only and not compared here; test/elbo does not depend on it.
        "model.eval_iwae_k=0",
    ]
    overrides += ["~logger"] if logger == "none" else [f"logger={logger}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    # Drop non-training callbacks by class rather than by config key, so renamed entries are caught too. The
    # final weights are tested, as in the plain loop; guards such as StopOnNonFiniteLoss stay.
    for key, entry in list((cfg.get("callbacks") or {}).items()):
        if entry is None or "_target_" not in entry:
            continue
        target = get_class(entry._target_)
        if (
            issubclass(target, NOT_TRAINING)
            or target.__module__.startswith(PICTURE_MODULES)
            or (logger == "none" and issubclass(target, LearningRateMonitor))  # it refuses to run without one
        ):
            cfg.callbacks[key] = None
    return cfg


def negative_elbo(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Per-image negative ELBO (nats), one sample of z: Bernoulli BCE-with-logits summed + analytic KL."""
    mu, logvar = net.encoder(x).chunk(2, dim=1)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    recon = F.binary_cross_entropy_with_logits(net.decoder(z), x, reduction="none").flatten(1).sum(1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1)
    return recon + kl


class PlainLoop:
    """The textbook loop (shuffle, forward, backward, Adam step), with a random stream of its own so that its
    epochs can run between genlab's without either changing the other's random numbers."""

    def __init__(self, net: nn.Module, images: torch.Tensor, batch_size: int, seed: int) -> None:
        self.net = net
        self.images = images
        self.batch_size = batch_size
        self.optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        self.shuffle = torch.Generator().manual_seed(seed)
        self.rng_state = torch.Generator().manual_seed(seed).get_state()
        self.epoch_seconds: list[float] = []

    def epoch(self) -> None:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.set_rng_state(self.rng_state)
            self.net.train()
            start = time.perf_counter()
            total = torch.zeros(())
            for index in torch.randperm(len(self.images), generator=self.shuffle).split(self.batch_size):
                loss = negative_elbo(self.net, self.images[index]).mean()
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                total += loss.detach()
            self.epoch_seconds.append(time.perf_counter() - start)
            self.rng_state = torch.get_rng_state()

    @torch.no_grad()
    def test(self, images: torch.Tensor, batch_size: int = 1000) -> float:
        """Mean negative ELBO over `images`, nats per image, one sample of z (as pytorch/examples)."""
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.rng_state)
            self.net.eval()
            total = sum(negative_elbo(self.net, x).sum().item() for x in images.split(batch_size))
            return total / len(images)


class TrainEpochTimer(pl.Callback):
    """Wall time of each training epoch minus the validation that Lightning runs inside it, before its end;
    with `then` set, one plain epoch runs after each timed genlab epoch."""

    def __init__(self, then: PlainLoop | None = None) -> None:
        self.then = then
        self.epoch_seconds: list[float] = []
        self._start = 0.0
        self._validation = 0.0
        self._val_start = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._validation = 0.0
        self._start = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validation += time.perf_counter() - self._val_start

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.epoch_seconds.append(time.perf_counter() - self._start - self._validation)
        if self.then is not None:
            self.then.epoch()


def as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> float32 in [0, 1], converted once (a plain loop holds floats in memory)."""
    return images.float().div_(255)


def warm_up(net: nn.Module, images: torch.Tensor, steps: int = 50) -> None:
    """Untimed steps on a throwaway copy, so neither contender pays first-use costs (allocator, kernels)."""
    net = copy.deepcopy(net)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    with torch.random.fork_rng(devices=[]):  # leaves the seeded random stream as genlab.train would find it
        for x in images[: steps * 128].split(128):
            loss = negative_elbo(net, x).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


def summary(epoch_seconds: list[float], test_loss: float) -> dict[str, Any]:
    return {
        "epoch_seconds": epoch_seconds,
        "mean_epoch_seconds": statistics.fmean(epoch_seconds),
        "median_epoch_seconds": statistics.median(epoch_seconds),
        "min_epoch_seconds": min(epoch_seconds),
        "test_loss": test_loss,
    }


def run(epochs: int, seed: int, logger: str, schedule: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        cfg = compose_config(epochs, seed, Path(tmp), logger)

        # genlab's own code path, as in genlab.train.train.
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule: ImageDataModule = instantiate(cfg.data)
        model: VAE = instantiate(cfg.model, _partial_=True)(spec=datamodule.spec)

        # The plain loop starts from the very same weights and reads the very same tensors.
        datamodule.prepare_data()
        datamodule.setup("fit")
        train_images = as_float(datamodule.splits["train"].images)
        test_images = as_float(datamodule.splits["test"].images)
        plain = PlainLoop(copy.deepcopy(model.net), train_images, cfg.data.batch_size, cfg.seed)
        warm_up(plain.net, train_images)

        timer = TrainEpochTimer(then=plain if schedule == "interleaved" else None)
        callbacks = [timer, *instantiate_each(cfg.get("callbacks"))]
        loggers = instantiate_each(cfg.get("logger"))
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        trainer.fit(model, datamodule=datamodule)
        genlab_test = float(trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/elbo"])

        while len(plain.epoch_seconds) < epochs:
            plain.epoch()
        plain_test = plain.test(test_images)

    genlab, baseline = summary(timer.epoch_seconds, genlab_test), summary(plain.epoch_seconds, plain_test)
    return {
        "epochs": epochs,
        "seed": seed,
        "schedule": schedule,
        "logger": logger,
        "torch_threads": torch.get_num_threads(),
        "train_images": len(train_images),
        "batch_size": int(cfg.data.batch_size),
        "callbacks": [type(callback).__name__ for callback in trainer.callbacks if callback is not timer],
        "genlab": genlab,
        "plain": baseline,
        # The median is the headline: one epoch slowed by another process moves the mean a lot.
        "ratio": genlab["median_epoch_seconds"] / baseline["median_epoch_seconds"],
        "ratio_mean": genlab["mean_epoch_seconds"] / baseline["mean_epoch_seconds"],
        "ratio_min": genlab["min_epoch_seconds"] / baseline["min_epoch_seconds"],
        "test_loss_gap": genlab_test - plain_test,
    }


def report(numbers: dict[str, Any]) -> None:
    title = (
        f"VAE on MNIST: {numbers['epochs']} epochs, {numbers['schedule']}, torch threads: {numbers['torch_threads']}"
    )
    table = Table(title=title)
    for column in ("", "s/epoch mean", "s/epoch median", "s/epoch min", "test loss (nats)"):
        table.add_column(column, justify="right" if column else "left")
    for name in ("genlab", "plain"):
        row = numbers[name]
        table.add_row(
            name,
            *(f"{row[f'{stat}_epoch_seconds']:.3f}" for stat in ("mean", "median", "min")),
            f"{row['test_loss']:.2f}",
        )
    table.add_row(
        "genlab/plain",
        *(f"{numbers[key]:.3f}" for key in ("ratio_mean", "ratio", "ratio_min")),
        f"{numbers['test_loss_gap']:+.2f}",
    )
    console = Console()
    console.print(table)
    console.print(f"genlab callbacks (besides the epoch timer): {', '.join(numbers['callbacks']) or 'none'}")
    for name in ("genlab", "plain"):
        if numbers[name]["mean_epoch_seconds"] > 1.2 * numbers[name]["median_epoch_seconds"]:
            console.print(f"[yellow]{name}: mean > 1.2 x median, so other processes were probably using the CPU")
    ratio_ok = "ok" if numbers["ratio"] <= RATIO_TARGET else "ABOVE TARGET"
    gap_ok = "ok" if abs(numbers["test_loss_gap"]) <= LOSS_GAP_TARGET else "ABOVE TARGET"
    console.print(f"ratio (median) target <= {RATIO_TARGET}: {ratio_ok}")
    console.print(f"|test-loss gap| target <= {LOSS_GAP_TARGET}: {gap_ok}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logger", default="none", help="none, or a genlab logger config (e.g. csv)")
    parser.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    numbers = run(args.epochs, args.seed, args.logger, args.schedule)
    report(numbers)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
