"""Benchmark: genlab on a GPU machine, in about 10 minutes: nanoGPT's GPU recipe, a GAN in bf16-mixed and 16-mixed,
and DDP over the machine's GPUs against one.

Every part is one real `genlab-train` process (what a user gets), with `trainer.max_time` set to its share of
`--minutes` (the start-up and the final evaluation of the best checkpoint come on top), run folders under
`--runs-dir`:

- gpt: `experiment=gpt_shakespeare`, nanoGPT's recipe for character-level Shakespeare (6 layers, 6 heads, n_embd
  384, block 256, batch 64, bf16-mixed, torch.compile, 5000 steps; nanoGPT reports val loss 1.4697 in about 3 minutes
  on one A100). 45% of the budget.
- gan_bf16, gan_fp16: `experiment=dcgan_mnist trainer=gpu` at `trainer.precision=bf16-mixed` and `16-mixed` (the
  experiment's 5 epochs of batch 128, FID on every validation). 12% each.
- ddp: the bf16 GAN again with `trainer=ddp trainer.devices=<all visible GPUs>` (batch 128 per device), against
  gan_bf16 on one device; skipped, with the reason printed, where only one GPU is visible. 16%.

What is reported (a table, and `--out` as JSON with the GPU, the torch and Lightning versions each run recorded in
its manifest.json, and every run's command and folder):

- steps: training batches done (the GPT recipe's 5000, or where the budget stopped it).
- train s: training seconds without validation, as Lightning's ThroughputMonitor counts them (added to each run as
  `callbacks.throughput`, logged to the run's csv/metrics.csv by `logger=csv`); wall s: the whole process.
- throughput: tokens/s (GPT: windows/s x block size) or images/s (GAN; DDP: all devices together), from the logged
  sample counts and seconds after the first logged window, so start-up costs (torch.compile, cuDNN autotuning,
  the first allocations) are left out. The monitor waits for the GPU after each batch, as StopOnNonFiniteLoss
  already does (it reads every step's loss), so it adds no wait of its own.
- quality: the best checkpoint's val loss in nats per character (GPT; nanoGPT: 1.4697) or test FID (GAN;
  classifier features, conf/metrics/sample_quality.yaml), from metrics.json.
- finite: every logged training loss finite, and the run not stopped by StopOnNonFiniteLoss (mixed precision's risk).
- DDP speed-up: its images/s over gan_bf16's, and that divided by the device count (scaling efficiency).

A run that fails is reported as such (its error line from manifest.json) and the next part runs; the exit status is
then 1. Without a CUDA device the script refuses with exit status 2, unless `--dry-run` is given: every part then
runs on the CPU with tiny sizes (no torch.compile, which works on the CPU but compiles for about 1.5 minutes; the
16-mixed part at 32-true, which Lightning would turn into bf16-mixed on a CPU; DDP as `trainer=ddp_sim`, 2 CPU
processes), which checks the script's plumbing on any machine in about two minutes.

Run from the repository root on a GPU machine with genlab installed (MNIST is downloaded into GENLAB_DATA_DIR if it
is not there):

    GENLAB_DATA_DIR=../shared/data python benchmarks/gpu.py --out gpu_benchmark.json

and anywhere, to check the script:

    GENLAB_DATA_DIR=../shared/data OMP_NUM_THREADS=1 python benchmarks/gpu.py --dry-run --out /tmp/gpu_dry.json

With the `device` tool (one H200, 16 cores; it runs a command in the root of a copy of the working tree, with
torch and Lightning but neither genlab, its Hydra and pydantic dependencies nor the data, and nothing can be
fetched there), prepare once, here in the repository root (the pinned versions: those `pip list` shows here):

    echo /.gpu_bench/ >> .git/info/exclude
    mkdir -p .gpu_bench/data/MNIST/raw && cp -r ../shared/data/shakespeare .gpu_bench/data/
    for f in ../shared/data/MNIST/raw/*-ubyte; do gzip -c $f > .gpu_bench/data/MNIST/raw/$(basename $f).gz; done
    python -m pip wheel --no-deps -w .gpu_bench/wheels . antlr4-python3-runtime==4.9.3
    python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \\
        --platform manylinux_2_17_x86_64 -d .gpu_bench/wheels hydra-core==1.3.8 omegaconf==2.3.1 \\
        pydantic==2.13.4 pydantic-core==2.46.4 annotated-types==0.7.0 typing-inspection==0.4.2

then call `run` with carry [".gpu_bench"], timeout_s 570 and this command (an 8-minute budget, so that the whole
call with the machine's start fits in a 15-minute lease):

    set -o pipefail; python3 -m pip install -q --no-index --no-deps .gpu_bench/wheels/*.whl &&
    gunzip -f .gpu_bench/data/MNIST/raw/*.gz && GENLAB_DATA_DIR=$PWD/.gpu_bench/data PYTHONUNBUFFERED=1
    python3 benchmarks/gpu.py --minutes 8 --out $OUT/gpu_benchmark.json 2>&1 | tee $OUT/gpu_benchmark.log
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
import torch
from omegaconf import DictConfig, OmegaConf
from rich.table import Table

from genlab.run.layout import CONFIG_FILE, MANIFEST_FILE
from genlab.run.records import read_json

#: Lightning's ThroughputMonitor counts each training batch's samples and the seconds spent training (validation
#: excluded); `logger=csv` writes them to csv/metrics.csv in the run folder (conf/logger/csv.yaml).
THROUGHPUT = (
    "+callbacks.throughput={_target_:pytorch_lightning.callbacks.ThroughputMonitor,"
    "batch_size_fn:{_target_:hydra.utils.get_method,path:pytorch_lightning.utilities.data.extract_batch_size}}"
)
CSV_LOG = Path("csv") / "metrics.csv"
NANOGPT_VAL_LOSS = 1.4697


@dataclass(frozen=True)
class Recipe:
    """What one experiment's runs report, and the tiny sizes of a --dry-run."""

    metric_names: tuple[str, ...]
    #: The metrics.json value shown as quality, and how it is labelled.
    quality: str
    quality_label: str
    unit: str
    tiny: tuple[str, ...]


RECIPES = {
    "gpt_shakespeare": Recipe(
        metric_names=("val/loss", "val/bpc", "test/loss"),
        quality="val/loss",
        quality_label="val loss",
        unit="tokens/s",
        tiny=(
            "model.compile=false",
            "model.net.n_layer=1",
            "model.net.n_head=2",
            "model.net.n_embd=32",
            "data.block_size=32",
            "data.batch_size=8",
            "data.val_batches=2",
            "data.steps_per_epoch=6",
            "trainer.max_steps=12",
            "trainer.log_every_n_steps=2",
        ),
    ),
    "dcgan_mnist": Recipe(
        metric_names=("val/fid", "test/fid", "test/kid", "test/class_entropy"),
        quality="test/fid",
        quality_label="test FID",
        unit="images/s",
        tiny=(
            "model.net.width=8",
            "trainer.max_epochs=2",
            "trainer.limit_train_batches=6",
            "trainer.limit_val_batches=1",
            "trainer.limit_test_batches=1",
            "metrics.num_real=200",
            "metrics.num_fake=200",
            "trainer.log_every_n_steps=2",
        ),
    ),
}


@dataclass(frozen=True)
class Part:
    """One genlab-train run: an experiment on a trainer config, at a precision (None: the experiment's), given
    `share` of the budget; the dry_ fields replace trainer and precision in a --dry-run."""

    name: str
    experiment: str
    trainer: str
    precision: str | None
    share: float
    devices: int = 1
    dry_trainer: str = "cpu"
    dry_precision: str | None = None

    def overrides(self, dry_run: bool, minutes: float) -> list[str]:
        trainer = self.dry_trainer if dry_run else self.trainer
        precision = (self.dry_precision or self.precision) if dry_run else self.precision
        return [
            f"experiment={self.experiment}",
            f"trainer={trainer}",
            *([f"trainer.devices={self.devices}"] if self.devices > 1 else []),
            *([f"trainer.precision={precision}"] if precision else []),
            f"trainer.max_time={harness.budget(minutes * self.share)}",
            "logger=csv",
            THROUGHPUT,
            *(RECIPES[self.experiment].tiny if dry_run else ()),
        ]


def plan(devices: int, dry_run: bool) -> list[Part]:
    """The parts, in order; DDP over `devices` (2 CPU processes in a dry run)."""
    return [
        Part("gpt", "gpt_shakespeare", "gpu", None, 0.45),
        Part("gan_bf16", "dcgan_mnist", "gpu", "bf16-mixed", 0.12),
        Part("gan_fp16", "dcgan_mnist", "gpu", "16-mixed", 0.12, dry_precision="32-true"),
        Part("ddp", "dcgan_mnist", "ddp", "bf16-mixed", 0.16, devices=2 if dry_run else devices, dry_trainer="ddp_sim"),
    ]


PART_NAMES = tuple(part.name for part in plan(devices=2, dry_run=False))


def ddp_skip_reason(devices: int, dry_run: bool) -> str | None:
    if dry_run or devices > 1:
        return None
    return f"{devices} CUDA device visible: DDP needs at least 2"


def training_log(run_dir: Path) -> list[dict[str, str]]:
    """The rows of the run's CSV log (empty if the run wrote none)."""
    path = run_dir / CSV_LOG
    if not path.is_file():
        return []
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def throughput(rows: list[dict[str, str]], devices: int) -> dict[str, Any]:
    """Batches, training seconds and samples per second from the ThroughputMonitor rows (rank 0's counts; each device
    trains on as many samples). The rate leaves out the first logged window, which holds the start-up costs."""
    progress = [
        (int(float(row["train/batches"])), int(float(row["train/samples"])), float(row["train/time"]))
        for row in rows
        if row.get("train/samples")
    ]
    if not progress:
        return {"steps": None, "train_seconds": None, "samples_per_second": None}
    steady = progress[1:] if len(progress) >= 3 else progress
    (_, first_samples, first_time), (_, last_samples, last_time) = steady[0], steady[-1]
    rate = (last_samples - first_samples) / (last_time - first_time) * devices if last_time > first_time else None
    return {"steps": progress[-1][0], "train_seconds": progress[-1][2], "samples_per_second": rate}


def is_training_loss(column: str) -> bool:
    """train/loss (GPT), train/d_loss and train/g_loss (GAN)."""
    return column.startswith("train/") and column.endswith("loss")


def losses_finite(rows: list[dict[str, str]], error: str | None) -> bool | None:
    """Every logged training loss finite, and the run not stopped by StopOnNonFiniteLoss; None before any was."""
    logged = [float(value) for row in rows for key, value in row.items() if is_training_loss(key) and value]
    if (error or "").startswith("NonFiniteLossError"):
        return False
    return all(math.isfinite(value) for value in logged) if logged else None


def saved_config(run_dir: Path) -> DictConfig | None:
    path = run_dir / CONFIG_FILE
    config = OmegaConf.load(path) if path.is_file() else None
    return config if isinstance(config, DictConfig) else None


def run_part(part: Part, args: argparse.Namespace, runs_dir: Path) -> dict[str, Any]:
    """Train the part, then read its numbers back from the run folder."""
    recipe = RECIPES[part.experiment]
    run_dir = runs_dir / part.name
    result = harness.train_run(
        run_dir,
        part.overrides(args.dry_run, args.minutes),
        args.seed,
        args.threads,
        recipe.metric_names,
        args.override,
        must_succeed=False,
    )
    manifest = read_json(run_dir / MANIFEST_FILE) or {}
    config = saved_config(run_dir)
    rows = training_log(run_dir)
    numbers = throughput(rows, part.devices)
    # A GPT sample is one window of block_size tokens.
    per_sample = int(config.data.block_size) if config is not None and recipe.unit == "tokens/s" else 1
    rate = numbers["samples_per_second"]
    return {
        **result,
        "experiment": part.experiment,
        "status": manifest.get("status", f"exit status {result['exit_status']}"),
        "error": manifest.get("error"),
        "device": manifest.get("device"),
        "versions": manifest.get("versions"),
        "precision": str(config.trainer.precision) if config is not None else None,
        "devices": part.devices,
        "max_steps": int(config.trainer.max_steps) if config is not None else None,
        "budget_minutes": args.minutes * part.share,
        **numbers,
        "unit": recipe.unit,
        "per_second": None if rate is None else rate * per_sample,
        "losses_finite": losses_finite(rows, manifest.get("error")),
    }


def run(args: argparse.Namespace, devices: int) -> dict[str, Any]:
    runs_dir = (
        args.runs_dir or Path("outputs/benchmarks/gpu") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    ).resolve()
    start = time.perf_counter()
    parts: dict[str, dict[str, Any]] = {}
    for part in plan(devices, args.dry_run):
        if part.name not in args.parts:
            continue
        reason = ddp_skip_reason(devices, args.dry_run) if part.trainer == "ddp" else None
        if reason:
            print(f"{part.name}: skipped ({reason})", flush=True)
            parts[part.name] = {"skipped": reason}
            continue
        parts[part.name] = run_part(part, args, runs_dir)
    ran = [result for result in parts.values() if "skipped" not in result]
    return {
        "dry_run": args.dry_run,
        "minutes": args.minutes,
        "seed": args.seed,
        "cuda_devices": devices,
        "gpu": next((result["device"] for result in ran if result["device"]), None),
        "versions": next((result["versions"] for result in ran if result["versions"]), None),
        "cuda": torch.version.cuda,
        "runs_dir": str(runs_dir),
        "wall_seconds": time.perf_counter() - start,
        "parts": parts,
        "ddp_speedup": ddp_speedup(parts),
    }


def ddp_speedup(parts: dict[str, dict[str, Any]]) -> dict[str, float] | None:
    """DDP's images/s over one device's (gan_bf16), and per device."""
    ddp, single = parts.get("ddp", {}), parts.get("gan_bf16", {})
    if not ddp.get("per_second") or not single.get("per_second"):
        return None
    speedup = ddp["per_second"] / single["per_second"]
    return {"speedup": speedup, "efficiency": speedup / ddp["devices"]}


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def quality_cell(result: dict[str, Any]) -> str:
    recipe = RECIPES[result["experiment"]]
    value = result.get(recipe.quality)
    return "-" if value is None else f"{recipe.quality_label}: {value:.4g}"


COLUMNS = ("part", "precision", "devices", "status", "steps", "train s", "wall s", "throughput", "quality", "finite")


def report(numbers: dict[str, Any]) -> None:
    dry_run = " (dry run: tiny sizes on the CPU, not a measurement)" if numbers["dry_run"] else ""
    table = Table(title=f"genlab on {numbers['gpu']}{dry_run}")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("part", "status", "quality") else "right")
    for name, result in numbers["parts"].items():
        if "skipped" in result:
            table.add_row(name, "", "", f"skipped: {result['skipped']}", *[""] * 6)
            continue
        steps = cell(result["steps"], 0) + (f"/{result['max_steps']}" if (result["max_steps"] or -1) > 0 else "")
        table.add_row(
            name,
            str(result["precision"]),
            str(result["devices"]),
            result["status"],
            steps,
            cell(result["train_seconds"], 1),
            cell(result["wall_seconds"], 1),
            "-" if result["per_second"] is None else f"{result['per_second']:,.0f} {result['unit']}",
            quality_cell(result),
            {True: "yes", False: "NO", None: "-"}[result["losses_finite"]],
        )
    console = harness.console()
    console.print(table)
    for name, result in numbers["parts"].items():
        if result.get("error"):
            console.print(f"[red]{name}: {result['error']}")
    if numbers["ddp_speedup"]:
        speedup = numbers["ddp_speedup"]
        console.print(
            f"DDP over {numbers['parts']['ddp']['devices']} devices: {speedup['speedup']:.2f}x one device's images/s "
            f"(scaling efficiency {speedup['efficiency']:.0%})"
        )
    if "gpt" in numbers["parts"]:
        console.print(f"gpt val loss: nats per character, best checkpoint; nanoGPT reports {NANOGPT_VAL_LOSS}")
    versions = numbers["versions"] or {}
    console.print(
        f"torch {versions.get('torch')} (CUDA {numbers['cuda']}), Lightning {versions.get('pytorch-lightning')}; "
        f"{numbers['wall_seconds'] / 60:.1f} min in all (budget {numbers['minutes']:g}); runs: {numbers['runs_dir']}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of all parts together")
    parser.add_argument("--dry-run", action="store_true", help="every part on the CPU with tiny sizes")
    parser.add_argument("--parts", nargs="+", choices=PART_NAMES, default=list(PART_NAMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs")
    parser.add_argument("--runs-dir", type=Path, default=None, help="default: outputs/benchmarks/gpu/<date>_<time>")
    parser.add_argument("--override", action="append", default=[], help="an extra genlab-train override of every run")
    parser.add_argument("--out", type=Path, default=Path("gpu_benchmark.json"), help="the numbers as JSON")
    args = parser.parse_args(argv)
    devices = torch.cuda.device_count()
    if devices == 0 and not args.dry_run:
        print("gpu.py: error: no CUDA device is visible; run it on a GPU machine, or give --dry-run", file=sys.stderr)
        sys.exit(2)
    numbers = run(args, devices)
    report(numbers)
    args.out.write_text(json.dumps(numbers, indent=2) + "\n")
    print(f"wrote {args.out}")
    if any(result.get("status", "completed") != "completed" for result in numbers["parts"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
