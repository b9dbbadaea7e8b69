"""The comparison table: one row per configuration (what varies across the runs), each metric as mean +- std over
seeds, the best row marked; rendered for the terminal, as Markdown and as CSV."""

from __future__ import annotations

import csv
import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from genlab.comparison.reading import MISSING, RunRecord, Skipped, _number, empty_jobs, find_runs, read_runs
from genlab.errors import DataError
from genlab.files import atomic_write, write_text_atomically
from genlab.run.layout import EVALS_DIR


@dataclass
class Row:
    """A configuration: its parameter values, its completed and failed runs, and per-metric (mean, std)."""

    params: dict[str, Any]
    runs: list[RunRecord]
    failed: list[RunRecord]
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
    failed: list[RunRecord]
    judged_metric: str | None
    judged_mode: str | None
    notes: list[str]
    #: Run folders that could not be read (damaged, empty, half-written): left out, and counted in the header.
    skipped: list[Skipped] = field(default_factory=list)

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
        unreadable = f" ({len(self.skipped)} unreadable runs skipped)" if self.skipped else ""
        return (
            f"{runs} runs{unreadable}, {len(self.rows)} configurations; mean ± std over seeds (sample std), "
            f"n completed runs; {judged}"
        )

    def cells(self, row: Row, metrics: Sequence[str] | None = None) -> list[str]:
        values = [_mean_std(*row.stats[m]) if m in row.stats else MISSING for m in metrics or self.metrics]
        params = [_cell(row.params[p]) for p in self.params]
        return ["✓" if row.best else "", *params, str(row.n), str(len(row.failed)), *values]

    def columns(self, metrics: Sequence[str] | None = None) -> list[str]:
        return ["best", *self.params, "n", "failed", *(metrics or self.metrics)]

    def headline_metrics(self) -> list[str]:
        """What fits a terminal: the judged metric and its test-split twin (without a judged one, the first few)."""
        if self.judged_metric is None:
            return self.metrics[:HEADLINE_METRICS]
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
        if self.skipped:
            lines.append("\n## Runs that could not be read (skipped)\n")
            lines.append("| run | reason |\n|---|---|")
            lines += [f"| {run.path} | {run.reason.replace('|', '/')} |" for run in self.skipped]
        return "\n".join(lines) + "\n"

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def write(self, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True, exist_ok=True)
        markdown, table = out_dir / "comparison.md", out_dir / "comparison.csv"
        write_text_atomically(markdown, self.to_markdown())
        records = self.records()
        with atomic_write(table) as partial, partial.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(records[0]) if records else self.columns())
            writer.writeheader()
            writer.writerows(records)
        return [markdown, table]

    def print(self, console: Console, metrics: Sequence[str] | None = None, title: str = "") -> None:
        """The table for a terminal: `metrics` (default: the headline ones); more than FOLDED_PARAMS parameters are
        folded into one column, a `key=value` line each, so that the metric columns keep their width."""
        metrics = [m for m in metrics if m in self.metrics] if metrics else self.headline_metrics()
        folded = len(self.params) > FOLDED_PARAMS
        columns = self.columns(metrics)
        if folded:
            columns = ["best", "parameters", *columns[len(self.params) + 1 :]]
        table = Table(title=f"{title}{self.header()}", title_justify="left")
        settings = {id(row): [f"{p}={_cell(row.params[p])}" for p in self.params] for row in self.rows}
        widest = max((len(line) for lines in settings.values() for line in lines), default=0)
        for column in columns:
            left = column in self.params or column == "parameters"
            width = min(widest, 48) if column == "parameters" else None  # else rich squeezes it to nothing
            table.add_column(column, justify="left" if left else "right", overflow="fold", min_width=width)
        for row in self.rows:
            cells = self.cells(row, metrics)
            if folded:
                cells = [cells[0], "\n".join(settings[id(row)]), *cells[1 + len(self.params) :]]
            table.add_row(*cells, style="bold green" if row.best else None)
        console.print(table)
        if len(metrics) < len(self.metrics):
            console.print(f"({len(self.metrics) - len(metrics)} more metrics in comparison.md and comparison.csv)")
        for note in self.notes:
            console.print(f"note: {note}")
        for run in self.failed:
            console.print(f"[red]{run.status}[/red]: {run.path}: {run.error or ''}")


#: Metrics shown in the terminal when the runs share no judged metric; parameters shown as columns before they are
#: folded into one.
HEADLINE_METRICS = 4
FOLDED_PARAMS = 4


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return MISSING if value is MISSING else "null" if value is None else str(value)


def _mean_std(mean: float, std: float) -> str:
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if _number(value) else (1, str(value))


def varied_params(runs: Sequence[RunRecord]) -> list[str]:
    """The parameters that tell configurations apart: chosen groups and overrides whose value differs, then any
    other config value that differs and is not implied by them (e.g. an edited yaml file)."""

    def varies(key: str, groups: dict[tuple, list[RunRecord]]) -> bool:
        return any(len({repr(r.config.get(key, MISSING)) for r in group}) > 1 for group in groups.values())

    everyone = {(): list(runs)}
    primary = sorted({k for r in runs for k in r.primary}, key=lambda k: ("." in k, k))
    params = [k for k in primary if varies(k, everyone)]
    groups: dict[tuple, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(tuple(repr(run.config.get(k, MISSING)) for k in params), []).append(run)
    leaves = sorted({k for r in runs for k in r.config} - set(primary))
    return params + [k for k in leaves if varies(k, groups)]


def load_sweep(paths: str | Path | Iterable[str | Path], evaluations: bool = False) -> SweepTable:
    """The comparison table of the runs at or under `paths` (a multirun folder, run folders, any folder of runs);
    with `evaluations`, of their genlab-eval records (see `RunRecord.evaluations`)."""
    return table_of(*collect_runs(paths, evaluations))


#: What `load_groups` can split runs by: the model's class, or the data option chosen (`data=mnist`).
GROUPINGS = {"model": lambda run: run.model, "data": lambda run: str(run.config.get("data", "?"))}


def load_groups(
    paths: str | Path | Iterable[str | Path], evaluations: bool = False, by: str = "auto"
) -> dict[str, SweepTable]:
    """One table per model (`by="model"`) or per dataset (`"data"`), each with its own parameters, metrics and
    best row; `"auto"` splits by model when the runs have several, else by data when they have several, else not at
    all (`"none"`). Keys are like `model=VAE`, or "" for one table (which also lists the unreadable runs)."""
    runs, skipped = collect_runs(paths, evaluations)
    if by == "auto":
        by = next((name for name, key in GROUPINGS.items() if len({key(run) for run in runs}) > 1), "none")
    if by == "none":
        return {"": table_of(runs, skipped)}
    groups: dict[str, list[RunRecord]] = {}
    for run in runs:
        groups.setdefault(f"{by}={GROUPINGS[by](run)}", []).append(run)
    names = sorted(groups)
    return {name: table_of(groups[name], skipped if name == names[0] else []) for name in names}


def collect_runs(
    paths: str | Path | Iterable[str | Path], evaluations: bool = False
) -> tuple[list[RunRecord], list[Skipped]]:
    """The runs (or with `evaluations` their genlab-eval records) at or under `paths`, and those that could not be
    read; none at all is one line."""
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    run_dirs = find_runs(paths)
    where = ", ".join(map(str, paths))
    if not run_dirs:
        raise DataError(f"no run folders (with .hydra/config.yaml) under {where}")
    runs, skipped = read_runs(run_dirs, evaluations)
    if len(skipped) == len(run_dirs):
        raise DataError(
            f"none of the {len(run_dirs)} run folders under {where} is readable (first: {skipped[0].path}: "
            f"{skipped[0].reason}); restore their files or give other runs"
        )
    skipped += empty_jobs(paths)
    if evaluations and not runs:
        raise DataError(
            f"--evals: the runs under {where} have no genlab-eval records ({EVALS_DIR}/*.json); evaluate them "
            f"first, e.g. genlab-eval run=RUN model.guidance=2"
        )
    return runs, skipped


def table_of(runs: list[RunRecord], skipped: list[Skipped]) -> SweepTable:
    """The table of these runs: one row per configuration, the metrics they all have, the best row."""
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
    kinds = sorted({run.loss_kind for run in completed if run.loss_kind is not None})
    if len(kinds) > 1 and shared & {"val/loss", "test/loss"}:
        notes.append(f"val/loss and test/loss differ in kind across these runs: {'; '.join(kinds)}")
        if judged_metric in ("val/loss", "test/loss"):
            judged_metric = None  # a bound and a cross-entropy of other tokens: no best row by them
    if judged_metric not in shared:
        judged_metric = judged_mode = None
        if completed and len(kinds) < 2:
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
    return SweepTable(params, metrics, rows, failed, judged_metric, judged_mode, notes, skipped)


def write_groups(tables: dict[str, SweepTable], out_dir: Path) -> list[Path]:
    """comparison.md (a section per group) and comparison.csv (a `group` column) of `load_groups`' tables."""
    if list(tables) == [""]:
        return tables[""].write(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown, table = out_dir / "comparison.md", out_dir / "comparison.csv"
    sections = [t.to_markdown().replace("# Comparison\n", f"## {name}\n", 1) for name, t in tables.items()]
    write_text_atomically(markdown, "# Comparison\n\n" + "\n".join(sections))
    records = [{"group": name, **record} for name, t in tables.items() for record in t.records()]
    fields = list(dict.fromkeys(key for record in records for key in record))
    with atomic_write(table) as partial, partial.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(records)
    return [markdown, table]
