"""`genlab-compare PATH...`: one table row per configuration of a sweep (or any run folders), found from what varies
across the runs' configs; each metric as mean +- std over seeds; the best row marked; runs that did not complete
listed with their error. `--evals` compares the runs' genlab-eval records instead (each evaluation a configuration,
its overrides its parameters: a sweep of a sampling setting over one trained model).
`genlab.comparison.tables.load_sweep(paths)` gives the same table to a notebook."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console

from genlab.comparison.plots import plotted_metrics, write_plots
from genlab.comparison.tables import GROUPINGS, load_groups, write_groups
from genlab.errors import check, exit_on_user_error
from genlab.run.layout import HYDRA_DIR


@contextmanager
def warnings_on_stderr(program: str) -> Iterator[None]:
    """genlab's warnings (a damaged run skipped) as `program: warning: ...` lines on stderr, one each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{program}: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logger = logging.getLogger("genlab")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def main(argv: Sequence[str] | None = None) -> None:
    """The `genlab-compare` console script."""
    parser = argparse.ArgumentParser(
        prog="genlab-compare",
        description="Compare runs: one row per configuration (the parameters that vary across the runs), each metric "
        "as mean ± std over seeds, the best row marked; written as comparison.md and comparison.csv.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="a multirun folder, or run folders")
    parser.add_argument(
        "--evals",
        action="store_true",
        help="compare the runs' genlab-eval records (RUN/evals/*.json) instead of their metrics.json: each "
        "evaluation is a configuration, its overrides (e.g. model.guidance=2) its parameters",
    )
    parser.add_argument("--plot", action="store_true", help="also write learning curves and metric-vs-parameter PNGs")
    parser.add_argument(
        "--metric",
        action="append",
        metavar="NAME",
        help="with --plot: a metric to plot, e.g. test/cond_acc (repeatable; default: the judged metric)",
    )
    parser.add_argument(
        "--group-by",
        choices=["auto", *GROUPINGS, "none"],
        default="auto",
        help="one table per model or per dataset, each with its own parameters, metrics and best row (default "
        "auto: by model when the runs have several, else by data when they have several)",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="NAME",
        help="the metrics shown in the terminal, e.g. --metrics test/fid test/kid (default: the judged metric and "
        "its test twin; every metric is in comparison.md and comparison.csv)",
    )
    parser.add_argument(
        "--out", type=Path, help="where to write (default: the first PATH if it is a folder of runs, else .)"
    )
    args = parser.parse_args(argv)
    with exit_on_user_error("genlab-compare"), warnings_on_stderr("genlab-compare"):
        check(not args.metric or args.plot, "--metric chooses what --plot draws; add --plot")
        tables = load_groups(args.paths, evaluations=args.evals, by=args.group_by)
        known = sorted({metric for table in tables.values() for metric in table.metrics})
        unknown = [metric for metric in args.metrics or [] if metric not in known]
        check(not unknown, f"--metrics {' '.join(unknown)}: not a metric of these runs; they have: {', '.join(known)}")
        if args.plot:
            for table in tables.values():
                plotted_metrics(table, args.metric)  # before anything is written
        first = args.paths[0]
        out = args.out or (first if not (first / HYDRA_DIR).is_dir() else Path.cwd())
        console = Console(soft_wrap=True)
        for name, table in tables.items():
            table.print(console, args.metrics, title=f"{name}: " if name else "")
        written = write_groups(tables, out)
        if args.plot:
            for name, table in tables.items():
                written += write_plots(table, out / name if name else out, args.metric)
        console.print("written: " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    main()
