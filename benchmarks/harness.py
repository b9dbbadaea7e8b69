"""What the genlab-versus-plain-PyTorch benchmarks share: genlab's composed config minus non-training callbacks, the
Lightning trainer around a timing callback (the per-step one is here), timing statistics and their ratios, the rich
table and verdicts, the common command-line options and the JSON output; and whole genlab-train runs of saved
experiments, for the sample-quality tables.

The benchmarks are run as `python benchmarks/<name>.py` from the repository root, so this folder is on sys.path and
they import this module as `harness`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
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

from genlab.config import config_dir
from genlab.models.executions import split_batch
from genlab.run.layout import METRICS_FILE
from genlab.run.records import read_json
from genlab.training import (
    EVALUATION_CALLBACKS,
    MANUAL_OPTIMIZATION_TRAINER,
    execute_steps,
    instantiate_each,
    metric_callbacks,
    steps_per_execution,
)
from genlab.upstream import plain_gpu_check_without_a_gpu

#: Callbacks that do no training work (progress display, checkpoints, pictures and text samples, and the test-time
#: measurements of genlab.training.EVALUATION_CALLBACKS): left out of the timed run (with
#: trainer.enable_checkpointing=false, so Lightning adds no default checkpoint either).
NOT_TRAINING = (ProgressBar, ModelCheckpoint)
SAMPLE_MODULES = ("genlab.callbacks.samples",)

STATS = ("mean", "median", "min")
#: The ratio row of the table, in the order of STATS; "ratio" is the median's.
RATIO_KEYS = ("ratio_mean", "ratio", "ratio_min")
CONTENDERS = ("genlab", "plain")
#: parse_args' `extra` for benchmarks that interleave in chunks of steps (see TrainStepTimer).
CHUNK_OPTION = {"--chunk": {"type": int, "default": 25, "help": "steps per turn when interleaved"}}
#: parse_args' `extra` for benchmarks that take genlab overrides of their own (e.g. a tiny net).
SET_OPTION = {
    "--set": {"nargs": "*", "default": [], "help": "genlab overrides, e.g. a tiny net or steps_per_execution=8"}
}


def compose_config(
    overrides: Sequence[str], seed: int, output_dir: Path, logger: str, defaults: bool = False
) -> DictConfig:
    """genlab's `train` config with the benchmark's own `overrides` (experiment, length of the run), without progress
    bar, model summary, checkpoints or the callbacks that do no training work; `logger` is "none" or a genlab logger
    config. With `defaults`, everything a user's run has stays: progress bar, checkpoints, pictures, metrics."""
    quiet = [
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_model_summary=false",
        "++trainer.enable_checkpointing=false",
    ]
    overrides = [*overrides, *([] if defaults else quiet), f"seed={seed}", f"paths.output_dir={output_dir}"]
    overrides += ["~logger"] if logger == "none" else [f"logger={logger}"]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    if defaults:
        return cfg
    # Drop non-training callbacks by class rather than by config key, so renamed entries are caught too. The
    # final weights are evaluated, as in the plain loop; guards such as StopOnNonFiniteLoss stay.
    for key, entry in list((cfg.get("callbacks") or {}).items()):
        if entry is None or "_target_" not in entry:
            continue
        target = get_class(entry._target_)
        if (
            key in EVALUATION_CALLBACKS  # they measure the trained model at test (memorization, inpainting)
            or issubclass(target, NOT_TRAINING)
            or target.__module__.startswith(SAMPLE_MODULES)
            or (logger == "none" and issubclass(target, LearningRateMonitor))  # it refuses to run without one
        ):
            cfg.callbacks[key] = None
    return cfg


@contextmanager
def genlab_setup(
    overrides: Sequence[str], seed: int, logger: str, defaults: bool = False
) -> Iterator[tuple[DictConfig, Any]]:
    """The composed config (see compose_config), with a temporary output folder that lasts as long as the context,
    and genlab's own first steps, as in genlab.training.train: seed everything, instantiate the datamodule."""
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as tmp:
        cfg = compose_config(overrides, seed, Path(tmp), logger, defaults)
        plain_gpu_check_without_a_gpu()  # the plain loop, in this process, gets it too: as without Lightning
        pl.seed_everything(cfg.seed, workers=True, verbose=False)
        yield cfg, instantiate(cfg.data)


def build_trainer(
    cfg: DictConfig, timer: pl.Callback, model: pl.LightningModule, datamodule: Any, with_metrics: bool = False
) -> pl.Trainer:
    """The Trainer as genlab.train builds it from `cfg`, with `timer` first among the callbacks (and `model` and
    `datamodule` set up for `steps_per_execution`); `with_metrics` adds the sample-quality metrics, as a user's run
    has them."""
    metrics = metric_callbacks(cfg) if with_metrics else []
    callbacks = [timer, *instantiate_each("callbacks", cfg.get("callbacks")), *metrics]
    loggers = instantiate_each("logger", cfg.get("logger"))
    execution = steps_per_execution(cfg)
    manual = {} if execution is None else MANUAL_OPTIMIZATION_TRAINER
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **manual)
    if execution is not None:
        execute_steps(execution, model, datamodule)
    return trainer


class TrainStepTimer(pl.Callback):
    """Wall time of each training iteration, end of one batch to end of the next (data loading, hooks, optimizer
    and scheduler steps included); the clock restarts at each epoch start, so validation is left out. With `then`
    set (the plain loop's `steps(n)`), `chunk` plain steps run after every `chunk` timed genlab steps, outside the
    clock."""

    def __init__(self, then: Callable[[int], None] | None = None, chunk: int = 25) -> None:
        self.then = then
        self.chunk = chunk
        self.step_seconds: list[float] = []
        self._last = 0.0
        self._plain_done = 0  # genlab steps the plain loop has been run after

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        # With steps_per_execution a Lightning batch is a block of batches (the plain loop's steps; a GAN's D and G
        # steps are one step there), cut as the model cuts it: each gets its share of the time.
        execution = getattr(pl_module, "execution", None)
        steps = len(split_batch(batch, execution.batch_size)) if execution else 1
        self.step_seconds += [(time.perf_counter() - self._last) / steps] * steps
        if self.then is not None and len(self.step_seconds) >= self._plain_done + self.chunk:
            self._plain_done += self.chunk
            self.then(self.chunk)
        self._last = time.perf_counter()


class LossRecordingTimer(TrainStepTimer):
    """The step timer, also keeping each step's loss (what the model's training_step returns)."""

    def __init__(self, then: Callable[[int], None] | None = None, chunk: int = 25) -> None:
        super().__init__(then, chunk)
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.losses.append(outputs["loss"])
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


def shuffled_batches(size: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Indices of the batches of epoch after epoch over `size` examples, each epoch a new permutation drawn from
    `generator` (the last batch smaller): a plain loop's endless shuffled loader."""
    while True:
        yield from torch.randperm(size, generator=generator).split(batch_size)


def to_signed_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [-1, 1] (a tanh generator's or a diffusion model's range), converted once: a plain
    loop holds floats."""
    return images.float().div_(255).mul_(2).sub_(1)


def step_summary(unit: Unit, step_seconds: list[float], losses: list[torch.Tensor]) -> dict[str, Any]:
    """One contender's numbers in the step-timed benchmarks whose result is the mean training loss."""
    ms = [s * 1000 for s in step_seconds]
    return {
        "steps": len(ms),
        **unit.stats(ms),
        "train_seconds": sum(step_seconds),
        "mean_loss": float(torch.stack(losses).mean()),
        "step_ms": [round(m, 3) for m in ms],
    }


def callback_names(trainer: pl.Trainer, timer: pl.Callback) -> list[str]:
    """Class names of the trainer's callbacks other than `timer`."""
    return [type(callback).__name__ for callback in trainer.callbacks if callback is not timer]


@dataclass(frozen=True)
class Unit:
    """How a benchmark reports its timings: statistics under `<stat>_<key>`, columns headed `<label> <stat>`."""

    key: str
    label: str
    digits: int

    def stats(self, values: list[float]) -> dict[str, float]:
        """Mean, median and min of `values`."""
        return {
            f"mean_{self.key}": statistics.fmean(values),
            f"median_{self.key}": statistics.median(values),
            f"min_{self.key}": min(values),
        }

    def ratios(self, genlab: dict[str, Any], plain: dict[str, Any]) -> dict[str, float]:
        """genlab / plain for each statistic."""
        return {
            # The median is the headline: a stretch slowed by another process moves the mean a lot.
            "ratio": genlab[f"median_{self.key}"] / plain[f"median_{self.key}"],
            "ratio_mean": genlab[f"mean_{self.key}"] / plain[f"mean_{self.key}"],
            "ratio_min": genlab[f"min_{self.key}"] / plain[f"min_{self.key}"],
        }


def console() -> Console:
    """Rich's console, 120 columns wide when the output is not a terminal (rich would cut tables to 80)."""
    return Console(width=None if sys.stdout.isatty() else 120)


def comparison(
    unit: Unit, genlab: dict[str, Any], plain: dict[str, Any], trainer: pl.Trainer, timer: pl.Callback, **fields: Any
) -> dict[str, Any]:
    """What every benchmark reports: its own `fields` (length, seed, schedule, sizes...), the thread count, genlab's
    callbacks, both contenders' numbers and their ratios."""
    return {
        **fields,
        "torch_threads": torch.get_num_threads(),
        "callbacks": callback_names(trainer, timer),
        "genlab": genlab,
        "plain": plain,
        **unit.ratios(genlab, plain),
    }


def report_steps(
    numbers: dict[str, Any], unit: Unit, title: str, result: tuple[str, str, str, int], **options: Any
) -> None:
    """`report` for the step-timed benchmarks: total training seconds and one result column, `result` being
    (column label, key in each contender's numbers, key of the genlab - plain gap, digits)."""
    label, key, gap_key, digits = result
    chunks = f" (chunks of {numbers['chunk']})" if numbers["schedule"] == "interleaved" else ""
    cells = {name: [f"{numbers[name]['train_seconds']:.1f}", f"{numbers[name][key]:.{digits}f}"] for name in CONTENDERS}
    cells["genlab/plain"] = [
        f"{numbers['genlab']['train_seconds'] / numbers['plain']['train_seconds']:.3f}",
        f"{numbers[gap_key]:+.{digits}f}",
    ]
    report(
        numbers,
        unit,
        title=f"{title}, {numbers['schedule']}{chunks}",
        columns=["train s", label],
        cells=cells,
        timer="step timer",
        **options,
    )


def verdict(ok: bool) -> str:
    return "ok" if ok else "ABOVE TARGET"


def report(
    numbers: dict[str, Any],
    unit: Unit,
    *,
    title: str,
    columns: Sequence[str],
    cells: dict[str, list[str]],
    timer: str,
    ratio_target: float,
    checks: Sequence[tuple[str, bool]],
    notes: Sequence[str] = (),
) -> None:
    """The table (genlab, plain and genlab/plain rows: the timing statistics, then `columns` filled from `cells`,
    keyed by row name), the callbacks that ran, `notes`, a warning where a mean is well above its median, and the
    verdict on the median ratio and on each of `checks` (what, whether it is met)."""
    table = Table(title=title)
    for column in ("", *(f"{unit.label} {stat}" for stat in STATS), *columns):
        table.add_column(column, justify="right" if column else "left")
    for name in CONTENDERS:
        row = numbers[name]
        table.add_row(name, *(f"{row[f'{stat}_{unit.key}']:.{unit.digits}f}" for stat in STATS), *cells[name])
    table.add_row("genlab/plain", *(f"{numbers[key]:.3f}" for key in RATIO_KEYS), *cells["genlab/plain"])
    out = console()
    out.print(table)
    out.print(f"genlab callbacks (besides the {timer}): {', '.join(numbers['callbacks']) or 'none'}")
    for note in notes:
        out.print(note)
    for name in CONTENDERS:
        if numbers[name][f"mean_{unit.key}"] > 1.2 * numbers[name][f"median_{unit.key}"]:
            out.print(f"[yellow]{name}: mean > 1.2 x median, so other processes were probably using the CPU")
    out.print(f"ratio (median) target <= {ratio_target}: {verdict(numbers['ratio'] <= ratio_target)}")
    for what, ok in checks:
        out.print(f"{what}: {verdict(ok)}")


def budget(minutes: float) -> str:
    """trainer.max_time as Lightning reads it: DD:HH:MM:SS."""
    seconds = round(minutes * 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_command(command: Sequence[str], threads: int | None) -> tuple[int, float]:
    """Run a genlab console script (`command[0]`, e.g. genlab-train, with its arguments) beside this interpreter, so
    the genlab installed where the benchmark runs, with OMP_NUM_THREADS=`threads` if given; prints the command and
    returns its exit status and wall seconds."""
    print(f"$ {shlex.join(command)}", flush=True)
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
    start = time.perf_counter()
    executable = [str(Path(sys.executable).with_name(command[0])), *command[1:]]
    status = subprocess.run(executable, env=environment, check=False).returncode
    return status, time.perf_counter() - start


def run_genlab(command: Sequence[str], threads: int | None) -> float:
    """`run_command`, for benchmarks that cannot go on without it: a failure ends the benchmark. Returns the wall
    seconds."""
    status, seconds = run_command(command, threads)
    if status != 0:
        raise SystemExit(f"{command[0]} failed with exit status {status} (see above)")
    return seconds


def train_run(
    run_dir: Path,
    overrides: Sequence[str],
    seed: int,
    threads: int | None,
    metric_names: Sequence[str],
    extra: Sequence[str] = (),
    must_succeed: bool = True,
) -> dict[str, Any]:
    """One genlab-train run with `overrides`, then `extra`, in the run folder `run_dir` (see `run_command`); the
    command, the run folder, the exit status, the wall time, the `metric_names` values from metrics.json (None where
    absent) and its `sample_quality` record. Unless `must_succeed`, a failed run is returned too (its metrics None)."""
    command = [
        "genlab-train",
        *overrides,
        f"seed={seed}",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    status, seconds = run_command(command, threads)
    if status != 0 and must_succeed:
        raise SystemExit(f"genlab-train failed with exit status {status} (see above)")
    metrics = read_json(run_dir / METRICS_FILE) if status == 0 else None
    return {
        "command": shlex.join(command),
        "run_dir": str(run_dir),
        "exit_status": status,
        "wall_seconds": seconds,
        **{name: (metrics or {}).get(name) for name in metric_names},
        "sample_quality": (metrics or {}).get("sample_quality"),
    }


def train_experiments(
    experiments: Sequence[str],
    epochs: int,
    seed: int,
    threads: int | None,
    runs_dir: Path,
    extra: Sequence[str],
    metric_names: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Train each experiment with genlab-train for `epochs` epochs (run folders `runs_dir/<experiment>`, see
    `train_run`)."""
    return {
        experiment: train_run(
            runs_dir / experiment,
            [f"experiment={experiment}", f"trainer.max_epochs={epochs}"],
            seed,
            threads,
            metric_names,
            extra,
        )
        for experiment in experiments
    }


def parse_args(
    doc: str, length: str, default: int, argv: list[str] | None, extra: dict[str, dict[str, Any]] | None = None
) -> argparse.Namespace:
    """The options all benchmarks take: the run's `length` (e.g. --epochs, default `default`), --seed, --logger,
    --schedule, then the benchmark's `extra` ones (flag: add_argument keywords), --threads and --json."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(length, type=int, default=default)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logger", default="none", help="none, or a genlab logger config (e.g. csv)")
    parser.add_argument("--schedule", choices=("interleaved", "sequential"), default="interleaved")
    for flag, options in (extra or {}).items():
        parser.add_argument(flag, **options)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    return parser.parse_args(argv)


def execute(
    args: argparse.Namespace, run: Callable[[], dict[str, Any]], report: Callable[[dict[str, Any]], None]
) -> None:
    """Set torch's thread count (--threads), run, report, and write the numbers to --json if given."""
    if args.threads:
        torch.set_num_threads(args.threads)
    numbers = run()
    report(numbers)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
