"""Benchmark: genlab's VAE training (experiment=vae_mnist_examples) against a plain PyTorch loop.

Both train the pytorch/examples VAE (784-400-20 MLP, Bernoulli likelihood, Adam 1e-3, batch 128) on the same
in-memory MNIST tensors, in one process, for the same number of epochs from the same seed and initial weights.
Reported: seconds per training epoch (validation excluded; mean, median, min), their ratio genlab / plain
(the target applies to the median, which one disturbed epoch cannot move), and the test loss (negative ELBO,
nats per image, one sample of z) of both.

By default the two alternate epoch by epoch (a plain epoch runs right after each genlab training epoch, with
its own random stream), so load from other processes on the machine hits both alike; `--schedule sequential`
trains genlab fully, then the plain loop.

`--whole-epoch` times what a user waits for instead: genlab with every default of `genlab-train
experiment=vae_mnist_examples` (validation, sample-quality metrics, pictures, checkpoints, TensorBoard, the
progress bar), epoch start to next epoch start, against the pytorch/examples loop that trains, evaluates the
same held-out images and saves a reconstruction and a sample grid every epoch.

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data python benchmarks/vae_mnist.py --epochs 10
    GENLAB_DATA_DIR=../shared/data python benchmarks/vae_mnist.py --epochs 6 --whole-epoch --logger tensorboard
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import harness
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn
from torchvision.utils import save_image

from genlab.data.image_datamodule import ImageDataModule
from genlab.models.vae import VAE

#: Median ratio targets: a bare training epoch (only Lightning's per-step machinery may show), and a whole epoch
#: with genlab's defaults against the pytorch/examples epoch (what the defaults add must stay cheap).
TRAINING_EPOCH_TARGET = 1.05
WHOLE_EPOCH_TARGET = 1.15
LOSS_GAP_TARGET = 1.5

SECONDS = harness.Unit(key="epoch_seconds", label="s/epoch", digits=3)


def overrides(epochs: int) -> list[str]:
    """genlab's own config for the pytorch/examples VAE (harness.compose_config leaves out what a plain loop does
    not do either, unless told to keep the defaults)."""
    return [
        "experiment=vae_mnist_examples",
        "data=mnist",
        "trainer=cpu",
        f"trainer.max_epochs={epochs}",
        # The IWAE bound is test-only and not compared here; test/elbo does not depend on it.
        "model.eval_iwae_k=0",
    ]


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

    def whole_epoch(self, held_out: torch.Tensor, pictures: Path) -> None:
        """What pytorch/examples does every epoch: train, evaluate the held-out images, save a grid of 8 images
        beside their reconstructions and a grid of 64 samples from the prior."""
        start = time.perf_counter()
        self.epoch()
        self.test(held_out)
        with torch.no_grad():
            x = held_out[:8]
            mu, _ = self.net.encoder(x).chunk(2, dim=1)
            save_image(torch.cat([x, torch.sigmoid(self.net.decoder(mu)).view_as(x)]), pictures / "reconstruction.png")
            z = torch.randn(64, mu.shape[1], generator=self.shuffle)
            save_image(torch.sigmoid(self.net.decoder(z)).view(64, *x.shape[1:]), pictures / "sample.png")
        self.epoch_seconds[-1] = time.perf_counter() - start

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

    def __init__(self, then: Callable[[], None] | None = None) -> None:
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
            self.then()


class WholeEpochTimer(pl.Callback):
    """Wall time from each training epoch's start to the next one's (validation, metrics, pictures, checkpoints and
    logging included), minus the plain epoch run in between by `then`; the last epoch, followed by once-per-run
    work rather than by another epoch, is not counted."""

    def __init__(self, then: Callable[[], None] | None = None) -> None:
        self.then = then
        self.epoch_seconds: list[float] = []
        self._start: float | None = None
        self._plain = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.perf_counter()
        if self._start is not None:
            self.epoch_seconds.append(now - self._start - self._plain)
        self._start, self._plain = now, 0.0

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.then is not None:
            start = time.perf_counter()
            self.then()
            self._plain += time.perf_counter() - start


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
    return {"epoch_seconds": epoch_seconds, **SECONDS.stats(epoch_seconds), "test_loss": test_loss}


def run(epochs: int, seed: int, logger: str, schedule: str, whole_epoch: bool, extra: list[str]) -> dict[str, Any]:
    datamodule: ImageDataModule
    with (
        harness.genlab_setup([*overrides(epochs), *extra], seed, logger, defaults=whole_epoch) as (cfg, datamodule),
        tempfile.TemporaryDirectory(prefix="plain-pictures-") as pictures,
    ):
        # genlab's own code path, as in genlab.training.train.
        model: VAE = instantiate(cfg.model, _partial_=True)(spec=datamodule.spec)

        # The plain loop starts from the very same weights and reads the very same tensors.
        datamodule.prepare_data()
        datamodule.setup("fit")
        train_images = as_float(datamodule.splits["train"].images)
        val_images = as_float(datamodule.splits["val"].images)
        test_images = as_float(datamodule.splits["test"].images)
        plain = PlainLoop(copy.deepcopy(model.net), train_images, cfg.data.batch_size, cfg.seed)
        warm_up(plain.net, train_images)

        plain_epoch = (lambda: plain.whole_epoch(val_images, Path(pictures))) if whole_epoch else plain.epoch
        then = plain_epoch if schedule == "interleaved" else None
        timer = WholeEpochTimer(then) if whole_epoch else TrainEpochTimer(then)
        trainer = harness.build_trainer(cfg, timer, model, datamodule, with_metrics=whole_epoch)
        trainer.fit(model, datamodule=datamodule)
        genlab_test = float(trainer.test(model, datamodule=datamodule, verbose=False)[0]["test/elbo"])

        while len(plain.epoch_seconds) < epochs:
            plain_epoch()
        plain_test = plain.test(test_images)

    genlab, baseline = summary(timer.epoch_seconds, genlab_test), summary(plain.epoch_seconds, plain_test)
    return harness.comparison(
        SECONDS,
        genlab,
        baseline,
        trainer,
        timer,
        epochs=epochs,
        whole_epoch=whole_epoch,
        overrides=extra,
        seed=seed,
        schedule=schedule,
        logger=logger,
        train_images=len(train_images),
        batch_size=int(cfg.data.batch_size),
        test_loss_gap=genlab_test - plain_test,
    )


def report(numbers: dict[str, Any]) -> None:
    what = "whole epochs with the defaults" if numbers["whole_epoch"] else "training epochs"
    title = (
        f"VAE on MNIST: {numbers['epochs']} epochs, {what}, {numbers['schedule']}, "
        f"torch threads: {numbers['torch_threads']}"
    )
    cells = {name: [f"{numbers[name]['test_loss']:.2f}"] for name in harness.CONTENDERS}
    cells["genlab/plain"] = [f"{numbers['test_loss_gap']:+.2f}"]
    harness.report(
        numbers,
        SECONDS,
        title=title,
        columns=["test loss (nats)"],
        cells=cells,
        timer="epoch timer",
        ratio_target=WHOLE_EPOCH_TARGET if numbers["whole_epoch"] else TRAINING_EPOCH_TARGET,
        checks=[(f"|test-loss gap| target <= {LOSS_GAP_TARGET}", abs(numbers["test_loss_gap"]) <= LOSS_GAP_TARGET)],
    )


def main(argv: list[str] | None = None) -> None:
    options = {
        "--whole-epoch": {"action": "store_true", "help": "time whole epochs with genlab's defaults"},
        **harness.SET_OPTION,
    }
    args = harness.parse_args(__doc__, "--epochs", 10, argv, options)
    harness.execute(
        args, lambda: run(args.epochs, args.seed, args.logger, args.schedule, args.whole_epoch, args.set), report
    )


if __name__ == "__main__":
    main()
