"""Benchmark: the classifier-free guidance trade-off of a class-conditional DDPM on MNIST (test FID and cond_acc
against the guidance scale w).

One genlab-train run of experiment=cddpm_mnist for `--epochs` epochs, then one genlab-eval of its best checkpoint per
guidance scale (`--scales`; `model.guidance=W`, Ho & Salimans's w: -1 is the unconditional model the net learned
from the dropped labels, 0 the conditional model, > 0 guided), then `genlab-compare --evals RUN --plot --metric
test/fid --metric test/cond_acc`, which writes comparison.md, comparison.csv, test_fid_vs_model.guidance.png and
test_cond_acc_vs_model.guidance.png into `--out` (default RUNS_DIR/tradeoff). Each evaluation samples 1000 test and
1000 validation images (50 and 10 DDIM steps, twice the net evaluations per step when w != 0, in one batch). The
table adds the test class entropy, the lowest class's cond_acc and the minutes of each evaluation.

Run from the repository root (about half an hour of training and a few minutes per scale on 2 CPU cores):

    GENLAB_DATA_DIR=../shared/data python benchmarks/guidance_mnist.py --threads 2

`--run RUN` evaluates an existing run instead of training one (genlab-compare --evals compares every evaluation
record of the run, earlier ones too). A quick check that the script works:

    python benchmarks/guidance_mnist.py --epochs 1 --scales 0 2 --override trainer.limit_train_batches=5 \
        --eval-override metrics.num_fake=100 --eval-override model.sample_steps=5
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import harness
from rich.table import Table

EXPERIMENT = "cddpm_mnist"
SCALES = (-1.0, 0.0, 0.5, 1.0, 2.0, 4.0)
METRICS = ("test/fid", "test/cond_acc", "test/class_entropy", "val/fid", "val/cond_acc")
PLOTTED = ("test/fid", "test/cond_acc")


def run(args: argparse.Namespace) -> dict[str, Any]:
    runs_dir = (
        args.runs_dir or Path("outputs/benchmarks/guidance_mnist") / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    ).resolve()
    training = None
    if args.run is None:
        trained = harness.train_experiments(
            [EXPERIMENT], args.epochs, args.seed, args.threads, runs_dir, args.override, METRICS
        )
        training = trained[EXPERIMENT]
        run_dir = Path(training["run_dir"])
    else:
        run_dir = args.run.resolve()

    evaluations = []
    for scale in args.scales:
        command = ["genlab-eval", f"run={run_dir}", f"model.guidance={scale:g}", *args.eval_override]
        seconds = harness.run_genlab(command, args.threads)
        record = json.loads((run_dir / "eval.json").read_text())
        evaluations.append(
            {
                "guidance": scale,
                "command": " ".join(command),
                "wall_seconds": seconds,
                **{name: record.get(name) for name in METRICS},
                "cond_acc_per_class": (record.get("sample_quality") or {}).get("cond_acc_per_class"),
            }
        )

    out = (args.out or runs_dir / "tradeoff").resolve()
    compare = ["genlab-compare", "--evals", str(run_dir), "--plot", "--out", str(out)]
    for metric in PLOTTED:
        compare += ["--metric", metric]
    harness.run_genlab(compare, args.threads)
    return {
        "run_dir": str(run_dir),
        "training": training,
        "evaluations": evaluations,
        "compare": " ".join(compare),
        "plots": [str(out / f"{metric.replace('/', '_')}_vs_model.guidance.png") for metric in PLOTTED],
    }


def cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def report(numbers: dict[str, Any]) -> None:
    """One row per guidance scale."""
    table = Table(title=f"Classifier-free guidance on MNIST ({EXPERIMENT}): {numbers['run_dir']}")
    columns = ("w", "test FID", "test cond_acc", "lowest class acc", "class H", "val FID", "val cond_acc", "min")
    for column in columns:
        table.add_column(column, justify="right")
    for evaluation in numbers["evaluations"]:
        per_class = evaluation["cond_acc_per_class"]
        lowest = "-" if not per_class else f"{min(per_class):.3f} ({per_class.index(min(per_class))})"
        table.add_row(
            f"{evaluation['guidance']:g}",
            cell(evaluation["test/fid"], 2),
            cell(evaluation["test/cond_acc"], 3),
            lowest,
            cell(evaluation["test/class_entropy"], 3),
            cell(evaluation["val/fid"], 2),
            cell(evaluation["val/cond_acc"], 3),
            f"{evaluation['wall_seconds'] / 60:.1f}",
        )
    console = harness.console()
    console.print(table)
    console.print("w: eps = (1 + w) eps(x, y) - w eps(x, null); -1 = unconditional, 0 = conditional, > 0 guided")
    console.print("cond_acc: fraction of the fakes classified as the class asked for (chance 0.1); class H in nats")
    if numbers["training"]:
        minutes = numbers["training"]["wall_seconds"] / 60
        console.print(f"trained in {minutes:.1f} min: {numbers['training']['command']}")
    console.print("plots: " + ", ".join(numbers["plots"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (the experiment's: 3)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scales", type=float, nargs="+", default=list(SCALES), help="guidance scales w >= -1")
    parser.add_argument("--run", type=Path, default=None, help="evaluate this run folder instead of training one")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of the runs (default: torch's)")
    parser.add_argument(
        "--runs-dir", type=Path, default=None, help="default: outputs/benchmarks/guidance_mnist/<date>_<time>"
    )
    parser.add_argument("--out", type=Path, default=None, help="genlab-compare's folder (default: RUNS_DIR/tradeoff)")
    parser.add_argument("--override", action="append", default=[], help="a genlab-train override")
    parser.add_argument("--eval-override", action="append", default=[], help="a genlab-eval override of every scale")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers to this JSON file")
    args = parser.parse_args(argv)
    numbers = run(args)
    report(numbers)
    if args.json:
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")


if __name__ == "__main__":
    main()
