"""Benchmark: class-conditional against unconditional generation on MNIST, for the VAE and the GAN at the same budget.

Four genlab-train runs of saved experiments, each for `--epochs` epochs from the same seed: `vae_mnist` against
`cvae_mnist` and `dcgan_mnist` against `cdcgan_mnist` (each conditional experiment is its unconditional one plus
`model.conditional=true`: same net, optimizer, data and epochs). Reported from each run's metrics.json (the best
checkpoint by the judged metric): test FID (classifier features, 1000 real and 1000 generated images; a
conditional model's fakes are class-balanced, an unconditional one's are what it draws), test class entropy (nats;
ln 10 = 2.303 when the fakes cover the ten classes evenly), test `cond_acc` (conditional runs only: the fraction of
fakes the classifier assigns to the class they were asked for) with its lowest class, and the wall time.

FID on the classifier's features barely sees whether the samples of one class differ from each other (those
features mostly encode the class), and conditional GANs are known to let the label crowd out the noise. So the table
adds the within-class spread: the per-pixel standard deviation of 100 samples of each class, averaged over the
classes, divided by the same for the real test images (1: as varied as the data; near 0: one image per class).
Conditional models are asked for each class; an unconditional model's samples are grouped by the class the feature
classifier gives them.

Run from the repository root (the table gives each run's minutes; a conditional step costs about 5% more than
an unconditional one):

    GENLAB_DATA_DIR=../shared/data python benchmarks/conditional_mnist.py --epochs 5 --threads 2

`--override KEY=VALUE` (repeatable) goes to all four runs, e.g. `--override trainer.limit_train_batches=5` for a
quick check that the script works.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
import torch
from rich.table import Table

import genlab
from genlab.metrics.feature_classifier import load_or_train
from genlab.models.contracts import conditioning_of

#: (unconditional, conditional) experiment pairs, compared at the same budget.
PAIRS = (("vae_mnist", "cvae_mnist"), ("dcgan_mnist", "cdcgan_mnist"))
METRICS = ("test/fid", "test/class_entropy", "test/cond_acc", "test/kid")


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs_dir = args.runs_dir or Path("outputs/benchmarks/conditional_mnist") / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S"
    )
    experiments = [name for pair in PAIRS for name in pair]
    runs = harness.train_experiments(
        experiments, args.epochs, args.seed, args.threads, runs_dir.resolve(), args.override, METRICS
    )
    for result in runs.values():
        result["within_class_spread"] = within_class_spread(Path(result["run_dir"]), args.seed)
    return {"epochs": args.epochs, "seed": args.seed, "overrides": args.override, "runs": runs}


def spread(images: torch.Tensor, classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-pixel standard deviation within each class (of at least 2 images), averaged over pixels: (num_classes,),
    NaN for a class with fewer images."""
    return torch.stack(
        [
            images[classes == k].std(0).mean() if (classes == k).sum() >= 2 else torch.tensor(float("nan"))
            for k in range(num_classes)
        ]
    )


@torch.no_grad()
def within_class_spread(run_dir: Path, seed: int, per_class: int = 100) -> float:
    """The mean over classes of the generated images' within-class spread divided by the real test images' (see the
    module docstring), for the best checkpoint of the run."""
    run = genlab.load_run(run_dir)
    model, spec = run.model, run.model.spec
    datamodule = run.datamodule
    datamodule.prepare_data()
    datamodule.setup("test")
    splits = datamodule.splits
    real, real_classes = splits["test"][torch.arange(len(splits["test"]))]
    generator = torch.Generator().manual_seed(seed)
    if conditioning_of(model).enabled:
        fake_classes = torch.arange(spec.num_classes).repeat_interleave(per_class)
        fakes = model.sample(len(fake_classes), generator, labels=fake_classes)
    else:
        classifier = load_or_train(spec, splits["train"], splits["test"], run.config.paths.cache_dir).net
        fakes = model.sample(spec.num_classes * per_class, generator)
        fake_classes = classifier(fakes).argmax(1)
    ratio = spread(fakes, fake_classes, spec.num_classes) / spread(real, real_classes, spec.num_classes)
    return float(ratio.nanmean())


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(numbers: dict[str, Any]) -> None:
    """One row per run, conditional under its unconditional pair."""
    table = Table(
        title=f"Conditional against unconditional on MNIST, {numbers['epochs']} epochs, seed {numbers['seed']}"
    )
    columns = (
        "",
        "test FID",
        "test KID",
        "class H",
        "cond_acc",
        "lowest class acc",
        "within-class spread",
        "fake",
        "min",
    )
    for column in columns:
        table.add_column(column, justify="right" if column else "left")
    for experiment, result in numbers["runs"].items():
        counts = result["sample_quality"] or {}
        per_class = counts.get("cond_acc_per_class")
        lowest = "-" if not per_class else f"{min(per_class):.3f} ({per_class.index(min(per_class))})"
        table.add_row(
            experiment,
            cell(result["test/fid"], 2),
            cell(result["test/kid"], 3),
            cell(result["test/class_entropy"], 3),
            cell(result["test/cond_acc"], 3),
            lowest,
            cell(result["within_class_spread"], 3),
            str(counts.get("num_fake")),
            f"{result['wall_seconds'] / 60:.1f}",
        )
    console = harness.console()
    console.print(table)
    console.print("class H: entropy (nats) of the classes predicted for the fakes; ln 10 = 2.303 when all are even")
    console.print("cond_acc: fraction of fakes classified as the class asked for (conditional runs; chance 0.1)")
    console.print("within-class spread: pixel std of the fakes of a class / that of the real images (1 = as varied)")
    if numbers["overrides"]:
        console.print(f"overrides for every run: {' '.join(numbers['overrides'])}")
    for result in numbers["runs"].values():
        console.print(f"{result['run_dir']}: {result['command']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="epochs of every run (the same budget for all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: torch's)")
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="default: outputs/benchmarks/conditional_mnist/<date>_<time>"
    )
    parser.add_argument("--override", action="append", default=[], help="a genlab-train override for every run")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    numbers = run(args)
    report(numbers)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
