"""`outputs/train/latest`: a link to the run that completed last, so "the latest run" never names one that failed or
is still running (a listing of `runs/` sorted by name would)."""

from __future__ import annotations

import os
from pathlib import Path

from genlab.run.layout import LATEST, RUNS_DIR


def point_latest_at(run_dir: Path) -> None:
    """Make `<task folder>/latest` a relative link to `run_dir`, replacing the old one atomically; sweep jobs
    (not under `runs/`) and file systems without links leave it as it is."""
    run_dir = run_dir.resolve()  # a resume given `latest` itself
    if run_dir.parent.name != RUNS_DIR:
        return
    link = run_dir.parent.parent / LATEST
    staged = link.with_name(f".{LATEST}.{os.getpid()}")
    try:
        staged.unlink(missing_ok=True)
        staged.symlink_to(Path(RUNS_DIR) / run_dir.name, target_is_directory=True)
        os.replace(staged, link)
    except OSError:
        staged.unlink(missing_ok=True)
