"""What a finished run prints: its metrics as a table, with the judged one marked, and where its folder is."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rich.console import Console
from rich.table import Table


def print_metrics(metrics: Mapping[str, float], judged_metric: str, run_dir: Path, title: str) -> None:
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(f"[bold]{name}[/bold]" if name == judged_metric else name, f"{float(value):.4f}")
    console = Console(soft_wrap=True)
    console.print(f"{title}, judged by {judged_metric}:")
    console.print(table)
    console.print(f"run folder: {run_dir}")
