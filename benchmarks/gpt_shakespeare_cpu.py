"""Benchmark: genlab's GPT training (experiment=gpt_shakespeare_cpu) against a plain PyTorch loop.

Both train genlab's `GPT` net with nanoGPT's CPU recipe for character-level Shakespeare (block 64, batch 12, 4 layers,
4 heads, n_embd 128, dropout 0, no bias; AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1 on matrices only;
warm-up 100 steps then cosine to 1e-4 at step 2000; gradients clipped to norm 1) in one process, for the same number
of steps from the same seed and initial weights, on the same training tokens.

- genlab: `TransformerLM` + `ShakespeareDataModule` through a Lightning Trainer built from the composed config, as
  `genlab.train` builds it (minus progress bar, checkpoints, text samples and, without a logger, the LR monitor).
- plain: the textbook loop (draw 12 random windows of 65 tokens, forward, backward, clip, AdamW step, LambdaLR step).

Reported: milliseconds per training iteration (validation excluded; mean, median, min), their ratio genlab / plain
(the target applies to the median, which a few disturbed steps cannot move), and the final validation loss of both
on genlab's validation windows (20 fixed, seeded batches of 12 windows from the last 10% of the text; nats per
token, weighted by tokens). nanoGPT reports val loss 1.88 after 2000 iterations.

By default the two alternate in chunks of `--chunk` steps (the plain loop runs a chunk right after each chunk of
genlab steps, with its own random stream), so load from other processes on the machine hits both alike;
`--schedule sequential` trains genlab fully, then the plain loop.

Run from the repository root:

    GENLAB_DATA_DIR=../shared/data python benchmarks/gpt_shakespeare_cpu.py --steps 2000
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from rich.console import Console
from rich.table import Table
from torch.utils.data import DataLoader

from genlab.config import config_dir
from genlab.data.text import ShakespeareDataModule
from genlab.models.lm import TransformerLM
from genlab.models.schedules import warmup_cosine
from genlab.nets.transformer import GPT
from genlab.train import build_model, instantiate_each

RATIO_TARGET = 1.10
VAL_LOSS_TARGET = 1.89

#: Callbacks that do no training work (progress display, checkpoints, samples): left out of the timed run
#: (with trainer.enable_checkpointing=false, so Lightning adds no default checkpoint either).
NOT_TRAINING = (ProgressBar, ModelCheckpoint)
SAMPLE_MODULES = ("genlab.callbacks.samples",)


def compose_config(steps: int, seed: int, output_dir: Path, logger: str) -> DictConfig:
    """genlab's own config for nanoGPT's CPU recipe, minus what a plain loop does not do either."""
    overrides = [
        "experiment=gpt_shakespeare_cpu",
        f"trainer.max_steps={steps}",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false",
        "++trainer.enable_checkpointing=false",
        f"seed={seed}",
        f"paths.output_dir={output_dir}",
    ]
    overrides += ["~logger"] if logger == "none" else [f"logger={logger}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    # max_steps ends the run; enough epochs that max_epochs never ends it first (more than 2000 steps).
    cfg.trainer.max_epochs = max(int(cfg.trainer.max_epochs), math.ceil(steps / int(cfg.data.steps_per_epoch)))
    # Drop non-training callbacks by class rather than by config key, so renamed entries are caught too. The
    # final weights are validated, as in the plain loop; guards such as StopOnNonFiniteLoss stay.
    for key, entry in list((cfg.get("callbacks") or {}).items()):
        if entry is None or "_target_" not in entry:
            continue
        target = get_class(entry._target_)
        if (
            issubclass(target, NOT_TRAINING)
            or target.__module__.startswith(SAMPLE_MODULES)
            or (logger == "none" and issubclass(target, LearningRateMonitor))  # it refuses to run without one
        ):
            cfg.callbacks[key] = None
    return cfg


class PlainLoop:
    """nanoGPT's loop on genlab's net: random windows, forward, backward, clip, AdamW step, LambdaLR step.

    Batches come from a generator of its own, so its steps can run between genlab's without changing the random
    stream genlab's sampler draws from.
    """

    def __init__(self, net: GPT, tokens: torch.Tensor, cfg: DictConfig, seed: int) -> None:
        self.net = net
        self.tokens = tokens
        self.block_size = int(cfg.data.block_size)
        self.batch_size = int(cfg.data.batch_size)
        self.num_windows = len(tokens) - self.block_size  # as genlab's TokenWindows and nanoGPT's get_batch
        self.span = torch.arange(self.block_size + 1)
        self.clip = float(cfg.trainer.gradient_clip_val)
        opt, sched = cfg.model.optimizer, cfg.model.scheduler
        self.optimizer = torch.optim.AdamW(
            net.configure_param_groups(float(cfg.model.weight_decay)),
            lr=float(opt.lr),
            betas=(float(opt.betas[0]), float(opt.betas[1])),
            fused=opt.get("fused"),
        )
        self.scheduler = warmup_cosine(
            self.optimizer, int(sched.warmup_steps), int(sched.decay_steps), float(sched.min_lr)
        )
        self.generator = torch.Generator().manual_seed(seed)
        self.step_seconds: list[float] = []

    def steps(self, n: int) -> None:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            self.net.train()
            for _ in range(n):
                start = time.perf_counter()
                starts = torch.randint(self.num_windows, (self.batch_size,), generator=self.generator)
                windows = self.tokens[starts.unsqueeze(1) + self.span]
                _, loss = self.net(windows[:, :-1], windows[:, 1:])
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.clip)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step_seconds.append(time.perf_counter() - start)

    @torch.no_grad()
    def validate(self, loader: DataLoader) -> float:
        """Mean cross-entropy (nats per token) over the loader's windows, weighted by tokens."""
        self.net.eval()
        total, count = 0.0, 0
        for inputs, targets in loader:
            _, loss = self.net(inputs, targets)
            total += loss.item() * targets.numel()
            count += targets.numel()
        self.net.train()
        return total / count


class TrainStepTimer(pl.Callback):
    """Wall time of each training iteration, end of one batch to end of the next (data loading, hooks, optimizer
    and scheduler steps included); the clock restarts at each epoch start, so validation is left out. With `then`
    set, `chunk` plain steps run after every `chunk` timed genlab steps, outside the clock."""

    def __init__(self, then: PlainLoop | None = None, chunk: int = 25) -> None:
        self.then = then
        self.chunk = chunk
        self.step_seconds: list[float] = []
        self._last = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.step_seconds.append(time.perf_counter() - self._last)
        if self.then is not None and len(self.step_seconds) % self.chunk == 0:
            self.then.steps(self.chunk)
        self._last = time.perf_counter()


def warm_up(net: GPT, tokens: torch.Tensor, cfg: DictConfig, steps: int = 20) -> None:
    """Untimed steps on a throwaway copy, so neither contender pays first-use costs (allocator, kernels)."""
    PlainLoop(copy.deepcopy(net), tokens, cfg, seed=12345).steps(steps)


def summary(step_seconds: list[float], val_loss: float) -> dict[str, Any]:
    ms = [s * 1000 for s in step_seconds]
    return {
        "steps": len(ms),
        "mean_ms": statistics.fmean(ms),
        "median_ms": statistics.median(ms),
        "min_ms": min(ms),
        "train_seconds": sum(step_seconds),
        "val_loss": val_loss,
        "step_ms": [round(m, 3) for m in ms],
    }


def run(steps: int, seed: int, logger: str, schedule: str, chunk: int) -> dict[str, Any]:
    wall_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        cfg = compose_config(steps, seed, Path(tmp), logger)

        # genlab's own code path, as in genlab.train.train.
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        datamodule: ShakespeareDataModule = instantiate(cfg.data)
        model: TransformerLM = build_model(cfg, datamodule.spec)

        # The plain loop starts from the very same weights and reads the very same tokens.
        datamodule.setup("fit")
        train_tokens = datamodule.tokens["train"]
        plain = PlainLoop(copy.deepcopy(model.net), train_tokens, cfg, cfg.seed)
        warm_up(plain.net, train_tokens, cfg)

        timer = TrainStepTimer(then=plain if schedule == "interleaved" else None, chunk=chunk)
        callbacks = [timer, *instantiate_each(cfg.get("callbacks"))]
        loggers = instantiate_each(cfg.get("logger"))
        trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
        trainer.fit(model, datamodule=datamodule)
        genlab_val = float(trainer.validate(model, datamodule=datamodule, verbose=False)[0]["val/loss"])

        plain.steps(len(timer.step_seconds) - len(plain.step_seconds))
        plain_val = plain.validate(datamodule.val_dataloader())

    genlab, baseline = summary(timer.step_seconds, genlab_val), summary(plain.step_seconds, plain_val)
    return {
        "steps": steps,
        "seed": seed,
        "schedule": schedule,
        "chunk": chunk,
        "logger": logger,
        "torch_threads": torch.get_num_threads(),
        "train_tokens": len(train_tokens),
        "parameters": model.net.num_parameters(),
        "callbacks": [type(callback).__name__ for callback in trainer.callbacks if callback is not timer],
        "genlab": genlab,
        "plain": baseline,
        # The median is the headline: a step slowed by another process moves the mean a lot.
        "ratio": genlab["median_ms"] / baseline["median_ms"],
        "ratio_mean": genlab["mean_ms"] / baseline["mean_ms"],
        "ratio_min": genlab["min_ms"] / baseline["min_ms"],
        "val_loss_gap": genlab_val - plain_val,
        "wall_seconds": time.perf_counter() - wall_start,
    }


def report(numbers: dict[str, Any]) -> None:
    chunks = f" (chunks of {numbers['chunk']})" if numbers["schedule"] == "interleaved" else ""
    title = f"GPT on tiny Shakespeare: {numbers['steps']} steps, {numbers['schedule']}{chunks}"
    table = Table(title=title)
    for column in ("", "ms/iter mean", "ms/iter median", "ms/iter min", "train s", "val loss"):
        table.add_column(column, justify="right" if column else "left")
    for name in ("genlab", "plain"):
        row = numbers[name]
        table.add_row(
            name,
            *(f"{row[f'{stat}_ms']:.2f}" for stat in ("mean", "median", "min")),
            f"{row['train_seconds']:.1f}",
            f"{row['val_loss']:.4f}",
        )
    table.add_row(
        "genlab/plain",
        *(f"{numbers[key]:.3f}" for key in ("ratio_mean", "ratio", "ratio_min")),
        f"{numbers['genlab']['train_seconds'] / numbers['plain']['train_seconds']:.3f}",
        f"{numbers['val_loss_gap']:+.4f}",
    )
    console = Console()
    console.print(table)
    console.print(f"genlab callbacks (besides the step timer): {', '.join(numbers['callbacks']) or 'none'}")
    console.print(f"total wall time: {numbers['wall_seconds']:.1f} s, torch threads: {numbers['torch_threads']}")
    for name in ("genlab", "plain"):
        if numbers[name]["mean_ms"] > 1.2 * numbers[name]["median_ms"]:
            console.print(f"[yellow]{name}: mean > 1.2 x median, so other processes were probably using the CPU")
    ratio_ok = "ok" if numbers["ratio"] <= RATIO_TARGET else "ABOVE TARGET"
    loss_ok = "ok" if numbers["genlab"]["val_loss"] <= VAL_LOSS_TARGET else "ABOVE TARGET"
    console.print(f"ratio (median) target <= {RATIO_TARGET}: {ratio_ok}")
    console.print(f"genlab val loss target <= {VAL_LOSS_TARGET} (nanoGPT: 1.88): {loss_ok}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logger", default="none", help="none, or a genlab logger config (e.g. csv)")
    parser.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved")
    parser.add_argument("--chunk", type=int, default=25, help="steps per turn when interleaved")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    numbers = run(args.steps, args.seed, args.logger, args.schedule, args.chunk)
    report(numbers)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
