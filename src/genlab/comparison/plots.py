"""genlab-compare's pictures: learning curves per configuration and a metric's final value against each parameter."""

from __future__ import annotations

import csv
import math
import re
import statistics
from collections.abc import Sequence
from pathlib import Path

from genlab.comparison.reading import _number
from genlab.comparison.tables import Row, SweepTable, _cell
from genlab.errors import DataError
from genlab.files import atomic_write
from genlab.run.layout import CSV_METRICS, TENSORBOARD_DIR


def learning_curve(run: Path, tag: str) -> dict[int, float]:
    """{step: value} of a scalar over training, from the run's TensorBoard events (else its CSV log).

    A completed run's last value is the evaluation of its best checkpoint after training (metrics.json), not a point
    of the curve, and is left out; a step logged twice (a resumed run) keeps its later value.
    """
    events: list[tuple[int, float]] = []
    if (run / TENSORBOARD_DIR).is_dir():
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        accumulator = EventAccumulator(str(run / TENSORBOARD_DIR), size_guidance={"scalars": 0})
        accumulator.Reload()
        if tag in accumulator.Tags()["scalars"]:
            events = [(event.step, event.value) for event in accumulator.Scalars(tag)]
    elif (run / CSV_METRICS).is_file():
        with (run / CSV_METRICS).open() as f:
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
    with atomic_write(path) as partial:
        figure.savefig(partial, dpi=120, format="png")
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
    with atomic_write(path) as partial:
        figure.savefig(partial, dpi=120, format="png")
    return path
