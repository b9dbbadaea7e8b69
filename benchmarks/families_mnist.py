"""Research table: the VAE, DCGAN, DDPM and flow matching on MNIST, each trained for the same wall-clock budget.

Each family is one `genlab-train` run of its CPU experiment (a subprocess with a run folder of its own under
`--dir`), with `trainer.max_time` = the budget, no epoch limit (and no minimum: a budget shorter than an epoch stops
inside it), the same seed and the same test images: every run's test split is cut to its first 1000 images
(`trainer.limit_test_batches=1`), the images test FID compares with. Validation (val/fid, or val/elbo for the VAE,
every epoch as each recipe does it) is inside the budget; the final evaluation of the best checkpoint is not.

All are scored alike (conf/metrics/sample_quality.yaml: classifier features, 1000 real and 1000 generated images
from seed 0, KID subsets of 100). Afterwards each run is loaded back (`genlab.load_run`) and the time to draw
`--sample-n` images with its test-time settings is measured here (`--threads` torch threads).

Reported per family: optimizer steps and epochs reached, test FID, KID, class entropy (ln 10 = 2.303 at most),
test bits/dim on 8-bit pixel values where the model defines one (the VAE with a Gaussian decoder, its ELBO + 8
bits; DDPM, its variational bound; not DCGAN, and not flow matching, whose likelihood needs an ODE solve), and
milliseconds per sampled image.

Run from the repository root, on a quiet machine (each family takes the budget plus its final evaluation):

    GENLAB_DATA_DIR=../shared/data python benchmarks/families_mnist.py --minutes 20 --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
import torch
from rich.table import Table

import genlab

#: Each family's experiment; the VAE with a Gaussian decoder, so that its bits/dim is on 8-bit values like DDPM's.
FAMILIES = {
    "VAE": ["experiment=vae_mnist", "model.likelihood=gaussian"],
    "DCGAN": ["experiment=dcgan_mnist"],
    "DDPM": ["experiment=ddpm_mnist"],
    "flow matching": ["experiment=flow_mnist"],
}
METRICS = ("test/fid", "test/kid", "test/class_entropy", "test/bpd")


def train(family: str, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    command = [
        "genlab-train",
        *FAMILIES[family],
        f"trainer.max_time='{harness.budget(args.minutes)}'",
        "trainer.max_epochs=-1",
        "trainer.min_epochs=0",
        "trainer.limit_test_batches=1",
        f"seed={args.seed}",
        "callbacks.progress_bar=null",
        f"hydra.run.dir={run_dir}",
        *args.override,
    ]
    print(f"$ {shlex.join(command)}", flush=True)
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})}
    start = time.perf_counter()
    # The console script beside this interpreter: the genlab installed where this benchmark runs.
    executable = [str(Path(sys.executable).with_name("genlab-train")), *command[1:]]
    status = subprocess.run(executable, env=environment, check=False).returncode
    if status != 0:
        raise SystemExit(f"families_mnist.py: genlab-train for {family} failed with exit status {status} (see above)")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return {
        "command": shlex.join(command),
        "run_dir": str(run_dir),
        "wall_seconds": time.perf_counter() - start,
        **{name: metrics.get(name) for name in METRICS},
        "sample_quality": metrics.get("sample_quality"),
    }


def sampling(run_dir: Path, n: int) -> dict[str, Any]:
    """Steps and epochs the run reached (its last checkpoint) and the seconds per image its best checkpoint takes to
    sample n images (after one untimed warm-up image)."""
    last = genlab.load_run(run_dir, ckpt="last")
    run = genlab.load_run(run_dir)
    run.model.sample(1, torch.Generator().manual_seed(1))
    start = time.perf_counter()
    run.model.sample(n, torch.Generator().manual_seed(0))
    return {
        "global_step": last.global_step,
        "epochs": last.epoch + 1,
        "sample_ms_per_image": (time.perf_counter() - start) / n * 1000,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs_dir = args.dir or Path("outputs/benchmarks/families_mnist") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    results = {}
    for family in args.families:
        run_dir = (runs_dir / family.replace(" ", "_")).resolve()
        results[family] = train(family, args, run_dir)
        results[family].update(sampling(run_dir, args.sample_n))
    return {"minutes": args.minutes, "seed": args.seed, "torch_threads": torch.get_num_threads(), "runs": results}


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(numbers: dict[str, Any]) -> None:
    table = Table(title=f"MNIST, {numbers['minutes']:g} minutes of training each (seed {numbers['seed']})")
    columns = ("steps", "epochs", "test FID", "test KID", "class H", "test bpd", "ms/image", "real/fake", "min")
    for column in ("", *columns):
        table.add_column(column, justify="right" if column else "left")
    for family, result in numbers["runs"].items():
        counts = result["sample_quality"] or {}
        table.add_row(
            family,
            str(result["global_step"]),
            str(result["epochs"]),
            cell(result["test/fid"], 2),
            cell(result["test/kid"], 3),
            cell(result["test/class_entropy"], 3),
            cell(result["test/bpd"], 3),
            cell(result["sample_ms_per_image"], 2),
            f"{counts.get('num_real_test')}/{counts.get('num_fake')}",
            f"{result['wall_seconds'] / 60:.1f}",
        )
    console = harness.console()
    console.print(table)
    console.print(
        "class H: entropy (nats) of the classes predicted for the fakes, ln 10 = 2.303 when all are even; "
        "the GAN's global step counts its D and G steps; min: the whole run, final evaluation included; "
        f"ms/image with {numbers['torch_threads']} torch threads"
    )
    for result in numbers["runs"].values():
        console.print(f"{result['run_dir']}: {result['command']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0, help="training budget of each family")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--sample-n", type=int, default=100, help="images drawn to time sampling")
    parser.add_argument("--dir", type=Path, default=None, help="where the run folders go")
    parser.add_argument(
        "--override", action="append", default=[], help="an extra genlab-train override for every run (repeatable)"
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads here and in the runs")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    harness.execute(args, lambda: run(args), report)


if __name__ == "__main__":
    main()
