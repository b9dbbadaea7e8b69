"""Where a run's checkpoints are, which one `ckpt=best|last|PATH` names, and whether a file is a whole checkpoint;
light (no torch): `resume=` is checked with these before Lightning is imported. Reading them is `checkpoint_io`'s."""

from __future__ import annotations

import zipfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from genlab.errors import check
from genlab.run.layout import CHECKPOINTS, LAST, METRICS_FILE
from genlab.run.records import read_json


def checkpoint_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """Where the run's ModelCheckpoint wrote (callbacks.model_checkpoint.dirpath, `checkpoints/` by default)."""
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(dirpath) if dirpath else run_dir / CHECKPOINTS


def last_checkpoint(cfg: DictConfig, run_dir: Path) -> Path:
    return checkpoint_dir(cfg, run_dir) / f"{LAST}.ckpt"


def find_checkpoint(run_dir: Path, cfg: DictConfig, which: str) -> Path:
    """`best` (the one metrics.json describes; before the run wrote it, the newest best*.ckpt), `last`, or a path
    (relative to the working directory or to the run folder)."""
    folder = checkpoint_dir(cfg, run_dir)
    if which == LAST:
        path = last_checkpoint(cfg, run_dir)
        check(path.is_file(), f"ckpt=last: {path} does not exist; the run saved no checkpoint yet")
        return path
    if which == "best":
        described = (read_json(run_dir / METRICS_FILE) or {}).get("checkpoint")
        if described:
            return run_dir / described
        best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        check(bool(best), f"ckpt=best: no best checkpoint in {folder}; try ckpt=last or ckpt=PATH")
        return best[-1]
    path = Path(which).expanduser()
    return path if path.is_absolute() or path.exists() else run_dir / path


def check_checkpoint_file(path: Path, name: str = "ckpt_path") -> None:
    """A missing or truncated checkpoint fails here, in one line, before any data or model is built.

    torch.save writes a zip archive whose directory sits at the end, so a cut-off file is no longer a zip.
    """
    check(path.is_file(), f"{name}={path} is not a file; give the path of a .ckpt file, or {name}=last")
    check(
        zipfile.is_zipfile(path),
        f"{name}={path} is not a readable checkpoint (truncated, or not written by torch.save); "
        f"use another .ckpt, e.g. the run's checkpoints/last.ckpt",
    )
