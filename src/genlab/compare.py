"""`genlab-compare PATH...`: one table row per configuration of a sweep (or any run folders), found from what varies
across the runs' configs; each metric as mean +- std over seeds; the best row marked; runs that did not complete
listed with their error. `--evals` compares the runs' genlab-eval records instead (each evaluation a configuration,
its overrides its parameters: a sweep of a sampling setting over one trained model). `load_sweep(paths)` gives the
same table to a notebook."""

from __future__ import annotations

import argparse
import csv
import math
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from genlab.errors import DataError, check, exit_on_user_error
from genlab.run.config import read_config
from genlab.run.layout import CONFIG_FILE, EVALS_DIR, MANIFEST_FILE, METRICS_FILE
from genlab.run.records import read_json
from genlab.sweeps import parse_overrides

# Not what a configuration is: the seed is what runs of one configuration differ by; folders differ in every run.
IGNORED_KEYS = {"seed", "resume", "hydra", "paths"}
MISSING = "—"


def _ignored(key: str) -> bool:
    return re.split(r"[./]", key, maxsplit=1)[0] in IGNORED_KEYS


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: str(node) if isinstance(node, list) else node}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics_of(content: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.json or eval record (`split/name` keys)."""
    return {k: float(v) for k, v in content.items() if "/" in k and _number(v)}


@dataclass
class Run:
    """One run folder as compare reads it: its config (unresolved, as saved), overrides, status and metrics."""

    path: Path
    status: str
    error: str | None
    model: str
    config: dict[str, Any]  # flattened leaves, group choices and overrides: every candidate parameter
    primary: set[str]  # the keys a user chose: config groups and command-line overrides
    metrics: dict[str, float]
    judged_metric: str | None
    judged_mode: str | None

    @classmethod
    def read(cls, path: Path) -> Run:
        hydra_file = path / ".hydra" / "hydra.yaml"
        hydra = OmegaConf.to_container(read_config(hydra_file)).get("hydra", {}) if hydra_file.is_file() else {}
        config = _flatten(OmegaConf.to_container(read_config(path / CONFIG_FILE), resolve=False))
        choices = hydra.get("runtime", {}).get("choices", {})
        overrides = parse_overrides(hydra.get("overrides", {}).get("task", []))
        config.update(choices)
        config.update(overrides)
        manifest = read_json(path / MANIFEST_FILE) or {}
        content = read_json(path / METRICS_FILE) or {}
        status = manifest.get("status", "unknown")
        if status == "completed" and not content:
            status = "no metrics.json"
        return cls(
            path=path,
            status=status,
            error=manifest.get("error"),
            model=str(config.get("model._target_", "?")).rsplit(".", 1)[-1],
            config={k: v for k, v in config.items() if not _ignored(k)},
            primary={k for k in (*choices, *overrides) if not _ignored(k)},
            metrics=_metrics_of(content),
            judged_metric=content.get("judged_metric"),
            judged_mode=content.get("judged_mode"),
        )

    @classmethod
    def evaluations(cls, path: Path) -> list[Run]:
        """The genlab-eval records of the run folder `path` (`RUN/evals/*.json`), each as a run of its own: the
        run's config with the evaluation's overrides applied (so they are parameters that can vary), and the
        evaluation's metrics."""
        run = cls.read(path)
        found = []
        for record in sorted((path / EVALS_DIR).glob("*.json")):
            content = read_json(record) or {}
            overrides = parse_overrides(content.get("overrides", []))
            overrides = {k: v for k, v in overrides.items() if not _ignored(k)}
            found.append(
                replace(
                    run,
                    path=record,
                    status="completed",
                    error=None,
                    config={**run.config, **overrides},
                    primary=run.primary | set(overrides),
                    metrics=_metrics_of(content),
                    judged_metric=content.get("judged_metric"),
                    judged_mode=content.get("judged_mode"),
                )
            )
        return found

    @property
    def completed(self) -> bool:
        return self.status == "completed"


@dataclass
class Row:
    """A configuration: its parameter values, its completed and failed runs, and per-metric (mean, std)."""

    params: dict[str, Any]
    runs: list[Run]
    failed: list[Run]
    stats: dict[str, tuple[float, float]] = field(default_factory=dict)
    best: bool = False

    @property
    def n(self) -> int:
        return len(self.runs)


@dataclass
class SweepTable:
    """The comparison: `params` that vary, `metrics` shared by all completed runs, `rows`, and what went wrong."""

    params: list[str]
    metrics: list[str]
    rows: list[Row]
    failed: list[Run]
    judged_metric: str | None
    judged_mode: str | None
    notes: list[str]

    def records(self) -> list[dict[str, Any]]:
        """One flat dict per row (e.g. for `pandas.DataFrame(table.records())`)."""
        records = []
        for row in self.rows:
            record: dict[str, Any] = {**row.params, "n": row.n, "failed": len(row.failed), "best": row.best}
            for metric in self.metrics:
                mean, std = row.stats.get(metric, (math.nan, math.nan))
                record[f"{metric} mean"], record[f"{metric} std"] = mean, std
            record["runs"] = ";".join(str(run.path) for run in row.runs + row.failed)
            records.append(record)
        return records

    def header(self) -> str:
        runs = sum(row.n + len(row.failed) for row in self.rows)
        judged = (
            f"best by {self.judged_metric} ({'lower' if self.judged_mode == 'min' else 'higher'} is better)"
            if self.judged_metric
            else "no best row"
        )
        return (
            f"{runs} runs, {len(self.rows)} configurations; mean ± std over seeds (sample std), n completed runs; "
            f"{judged}"
        )

    def cells(self, row: Row, metrics: Sequence[str] | None = None) -> list[str]:
        values = [_mean_std(*row.stats[m]) if m in row.stats else MISSING for m in metrics or self.metrics]
        params = [_cell(row.params[p]) for p in self.params]
        return ["✓" if row.best else "", *params, str(row.n), str(len(row.failed)), *values]

    def columns(self, metrics: Sequence[str] | None = None) -> list[str]:
        return ["best", *self.params, "n", "failed", *(metrics or self.metrics)]

    def headline_metrics(self) -> list[str]:
        """What fits a terminal: the judged metric and its test-split twin (every metric without a judged one)."""
        if self.judged_metric is None:
            return self.metrics
        twin = "test/" + self.judged_metric.split("/", 1)[-1]
        return [self.judged_metric, *([twin] if twin in self.metrics and twin != self.judged_metric else [])]

    def to_markdown(self) -> str:
        lines = [f"# Comparison\n\n{self.header()}\n"]
        lines += [f"- {note}" for note in self.notes]
        lines.append("")
        lines.append("| " + " | ".join(self.columns()) + " |")
        lines.append("|" + "---|" * len(self.columns()))
        lines += ["| " + " | ".join(self.cells(row)) + " |" for row in self.rows]
        if self.failed:
            lines.append("\n## Runs that did not complete\n")
            lines.append("| run | status | error |\n|---|---|---|")
            lines += [f"| {run.path} | {run.status} | {(run.error or '').replace('|', '/')} |" for run in self.failed]
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def write(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        markdown, table = out_dir / "comparison.md", out_dir / "comparison.csv"
        markdown.write_text(self.to_markdown())
        records = self.records()
        with table.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else self.columns())
            writer.writeheader()
            writer.writerows(records)
        return [markdown, table]

    def print(self, console: Console) -> None:
        metrics = self.headline_metrics()
        table = Table(title=self.header(), title_justify="left")
        for column in self.columns(metrics):
            table.add_column(column, justify="left" if column in self.params else "right", overflow="fold")
        for row in self.rows:
            table.add_row(*self.cells(row, metrics), style="bold green" if row.best else None)
        console.print(table)
        if len(metrics) < len(self.metrics):
            console.print(f"({len(self.metrics) - len(metrics)} more metrics in comparison.md and comparison.csv)")
        for note in self.notes:
            console.print(f"note: {note}")
        for run in self.failed:
            console.print(f"[red]{run.status}[/red]: {run.path}: {run.error or ''}")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return MISSING if value is MISSING else "null" if value is None else str(value)


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if _number(value) else (1, str(value))


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run folders (those holding `.hydra/config.yaml`) at or under each path."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise DataError(f"{path} does not exist; give a multirun folder or run folders")
        found += sorted(p.parent.parent for p in path.glob("**/.hydra/config.yaml"))
    return list(dict.fromkeys(found))


def varied_params(runs: Sequence[Run]) -> list[str]:
    """The parameters that tell configurations apart: chosen groups and overrides whose value differs, then any
    other config value that differs and is not implied by them (e.g. an edited yaml file)."""

    def varies(key: str, groups: dict[tuple, list[Run]]) -> bool:
        return any(len({repr(r.config.get(key, MISSING)) for r in group}) > 1 for group in groups.values())

    everyone = {(): list(runs)}
    primary = sorted({k for r in runs for k in r.primary}, key=lambda k: ("." in k, k))
    params = [k for k in primary if varies(k, everyone)]
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        groups.setdefault(tuple(repr(run.config.get(k, MISSING)) for k in params), []).append(run)
    leaves = sorted({k for r in runs for k in r.config} - set(primary))
    return params + [k for k in leaves if varies(k, groups)]


def load_sweep(paths: str | Path | Iterable[str | Path], evaluations: bool = False) -> SweepTable:
    """The comparison table of the runs at or under `paths` (a multirun folder, run folders, any folder of runs);
    with `evaluations`, of their genlab-eval records (see `Run.evaluations`)."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    run_dirs = find_runs(paths)
    where = ", ".join(map(str, paths))
    if not run_dirs:
        raise DataError(f"no run folders (with .hydra/config.yaml) under {where}")
    if not evaluations:
        runs = [Run.read(path) for path in run_dirs]
    else:
        runs = [evaluation for path in run_dirs for evaluation in Run.evaluations(path)]
        if not runs:
            raise DataError(
                f"--evals: the runs under {where} have no genlab-eval records ({EVALS_DIR}/*.json); evaluate them "
                f"first, e.g. genlab-eval run=RUN model.guidance=2"
            )
    params = varied_params(runs)
    completed = [run for run in runs if run.completed]
    notes: list[str] = []

    every = [set(run.metrics) for run in completed]
    shared = set.intersection(*every) if every else set()
    models = sorted({run.model for run in runs})
    if len(models) > 1:
        notes.append(f"runs of different models ({', '.join(models)}): compared on the metrics they all have only")
    left_out = sorted(set().union(*every) - shared)
    if left_out:
        notes.append(f"metrics not in every run, left out: {', '.join(left_out)}")
    if completed and not shared:
        notes.append("no metric is shared by all completed runs")
    judged = {(run.judged_metric, run.judged_mode) for run in completed}
    judged_metric, judged_mode = judged.pop() if len(judged) == 1 else (None, None)
    if judged_metric not in shared:
        judged_metric = judged_mode = None
        if completed:
            notes.append("the runs are not judged by one shared metric: no best row")
    metrics = sorted(shared, key=lambda m: (m != judged_metric, m))

    by_config: dict[tuple, Row] = {}
    for run in runs:
        values = {p: run.config.get(p, MISSING) for p in params}
        row = by_config.setdefault(tuple(repr(v) for v in values.values()), Row(values, [], []))
        (row.runs if run.completed else row.failed).append(run)
    rows = sorted(by_config.values(), key=lambda row: [_sort_key(row.params[p]) for p in params])
    for row in rows:
        for metric in metrics:
            values = [run.metrics[metric] for run in row.runs if math.isfinite(run.metrics[metric])]
            if values:
                std = statistics.stdev(values) if len(values) > 1 else math.nan
                row.stats[metric] = (statistics.fmean(values), std)
    ranked = [row for row in rows if judged_metric in row.stats]
    if ranked:
        sign = 1 if judged_mode == "min" else -1
        min(ranked, key=lambda row: sign * row.stats[judged_metric][0]).best = True
    failed = [run for run in runs if not run.completed]
    return SweepTable(params, metrics, rows, failed, judged_metric, judged_mode, notes)


def learning_curve(run: Path, tag: str) -> dict[int, float]:
    """{step: value} of a scalar over training, from the run's TensorBoard events (else its CSV log).

    A completed run's last value is the evaluation of its best checkpoint after training (metrics.json), not a point
    of the curve, and is left out; a step logged twice (a resumed run) keeps its later value.
    """
    events: list[tuple[int, float]] = []
    if (run / "tensorboard").is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            events = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    elif (run / "csv" / "metrics.csv").is_file():
        with (run / "csv" / "metrics.csv").open() as f:
            events = [(int(r["step"]), float(r[tag])) for r in csv.DictReader(f) if r.get(tag)]
    return dict(events[:-1])


def _label(row: Row, params: Sequence[str]) -> str:
    return ", ".join(f"{p}={_cell(row.params[p])}" for p in params) or "all runs"


def _filename(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def plotted_metrics(table: SweepTable, metrics: Sequence[str] | None) -> list[str]:
    """`metrics`, each checked to be in the table; by default the judged metric (none when the runs have none)."""
    for metric in metrics or []:
        if metric not in table.metrics:
            raise DataError(
                f"--metric {metric} is not a metric of every compared run; they share: {', '.join(table.metrics)}"
            )
    return list(metrics) if metrics else [table.judged_metric] if table.judged_metric else []


def write_plots(table: SweepTable, out_dir: Path, metrics: Sequence[str] | None = None) -> list[Path]:
    """PNGs, for each of `metrics` (default: the judged metric): its learning curves per configuration (mean and +-1
    std band over seeds), and its final value against each numeric parameter (one line per value of the other
    parameters)."""
    metrics = plotted_metrics(table, metrics)
    if metrics:
        out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for metric in metrics:
        written += _curves_plot(table, metric, out_dir)
        written += [_parameter_plot(table, metric, param, out_dir) for param in table.params if _numeric(table, param)]
    return written


def _numeric(table: SweepTable, param: str) -> bool:
    return all(_number(row.params[param]) for row in table.rows)


def _curves_plot(table: SweepTable, metric: str, out_dir: Path) -> list[Path]:
    """`curves_<metric>.png`, when the runs logged the metric over training (evaluation records did not)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    axes = figure.add_subplot()
    for row in table.rows:
        curves = [learning_curve(run.path, metric) for run in row.runs]
        steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
        if not steps:
            continue
        values = [[curve[step] for curve in curves] for step in steps]
        mean = [statistics.fmean(v) for v in values]
        std = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in values]
        (line,) = axes.plot(steps, mean, label=f"{_label(row, table.params)} (n={row.n})")
        low, high = [m - s for m, s in zip(mean, std, strict=True)], [m + s for m, s in zip(mean, std, strict=True)]
        axes.fill_between(steps, low, high, color=line.get_color(), alpha=0.2)
    if not axes.lines:
        return []
    axes.set(xlabel="step", ylabel=metric, title=f"{metric}: mean ± std over seeds")
    axes.legend(fontsize="small")
    path = out_dir / f"curves_{_filename(metric)}.png"
    figure.savefig(path, dpi=120)
    return [path]


def _parameter_plot(table: SweepTable, metric: str, param: str, out_dir: Path) -> Path:
    """`<metric>_vs_<param>.png`: the metric's final value against a numeric parameter."""
    from matplotlib.figure import Figure

    others = [p for p in table.params if p != param]
    figure = Figure(figsize=(6, 4.5), layout="constrained")
    axes = figure.add_subplot()
    series: dict[str, list[Row]] = {}
    for row in table.rows:
        if metric in row.stats:
            series.setdefault(_label(row, others), []).append(row)
    for label, rows in series.items():
        rows.sort(key=lambda row: row.params[param])
        x = [row.params[param] for row in rows]
        y = [row.stats[metric][0] for row in rows]
        error = [0.0 if math.isnan(row.stats[metric][1]) else row.stats[metric][1] for row in rows]
        axes.errorbar(x, y, yerr=error, marker="o", capsize=3, label=label)
    axes.set(xlabel=param, ylabel=f"final {metric}", title=f"{metric} against {param} (mean ± std)")
    axes.legend(fontsize="small")
    path = out_dir / f"{_filename(metric)}_vs_{_filename(param)}.png"
    figure.savefig(path, dpi=120)
    return path


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
        "--out", type=Path, help="where to write (default: the first PATH if it is a folder of runs, else .)"
    )
    args = parser.parse_args(argv)
    with exit_on_user_error("genlab-compare"):
        check(not args.metric or args.plot, "--metric chooses what --plot draws; add --plot")
        table = load_sweep(args.paths, evaluations=args.evals)
        if args.plot:
            plotted_metrics(table, args.metric)  # before anything is written
        first = args.paths[0]
        out = args.out or (first if not (first / ".hydra").is_dir() else Path.cwd())
        console = Console(soft_wrap=True)
        table.print(console)
        written = table.write(out)
        if args.plot:
            written += write_plots(table, out, args.metric)
        console.print("written: " + ", ".join(str(path) for path in written))


if __name__ == "__main__":
    main()
