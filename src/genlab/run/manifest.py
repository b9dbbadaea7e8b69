"""manifest.json: what ran, from which code, with what, and how it ended — written at start, updated at the end."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities import rank_zero_only

from genlab.errors import MachineError, Pruned, user_error_of
from genlab.files import write_json_atomically
from genlab.interrupts import interrupted_by
from genlab.run.latest import point_latest_at
from genlab.run.layout import MANIFEST_FILE
from genlab.run.records import read_json

#: Entries the job itself adds to manifest.json while it runs (`record`): the manifest's own writes keep them.
RECORDED_BY_JOB = ("privacy",)
PACKAGES = ("genlab", "torch", "pytorch-lightning", "hydra-core", "omegaconf", "torchmetrics")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    return f"cpu: {platform.processor() or platform.machine()}"


class Manifest:
    """The run's identity card. Only the main process writes it; status is running, completed, failed, interrupted or
    pruned (stopped early by a sweep's pruner)."""

    def __init__(self, run_dir: Path, seed: int, overrides: list[str]) -> None:
        self.path = Path(run_dir) / MANIFEST_FILE
        #: A completed run being resumed: if the resume fails or is interrupted, the run stays `completed` (its
        #: metrics.json still describes a checkpoint it has) and the attempt is recorded under `resumes`.
        self.completed_before = False
        commit = _git("rev-parse", "HEAD")
        self.content: dict[str, Any] = {
            "status": "running",
            "error": None,
            "seed": seed,
            "started_at": _now(),
            "ended_at": None,
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
            "overrides": overrides,
            "cwd": str(Path.cwd()),
            "git_commit": commit,
            "git_dirty": bool(_git("status", "--porcelain")) if commit else None,
            "versions": _versions(),
            "device": _device(),
            # A SLURM job started again after preemption continues the run it made (genlab.run.guard.requeued_into).
            "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        }

    @classmethod
    def resumed(cls, run_dir: Path, seed: int, overrides: list[str]) -> Manifest:
        """The manifest of a run continued with `resume=`: its first start as it was, this one added to `resumes`."""
        manifest = cls(run_dir, seed, overrides)
        previous = read_json(manifest.path)
        if previous is not None:
            now = manifest.content
            resume = {key: now[key] for key in ("started_at", "command", "overrides", "git_commit", "git_dirty")}
            resume["previous_status"] = previous.get("status")
            manifest.content = {**previous, "status": "running", "error": None, "ended_at": None}
            manifest.content["resumes"] = [*previous.get("resumes", []), resume]
            manifest.completed_before = previous.get("status") == "completed"
        return manifest

    @rank_zero_only
    def write(self, **updates: Any) -> None:
        on_disk = read_json(self.path) or {}
        self.content.update({key: on_disk[key] for key in RECORDED_BY_JOB if key in on_disk}, **updates)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomically(self.path, self.content)

    @contextmanager
    def track(self) -> Iterator[None]:
        """Mark the run running now, then completed, interrupted (Ctrl-C, SIGTERM) or failed with its error line."""
        self.write()
        try:
            yield
        except (KeyboardInterrupt, SystemExit):  # Lightning turns Ctrl-C into sys.exit(1) after a graceful stop
            self.end("interrupted", None)
            raise
        except Pruned as exc:
            self.end("pruned", str(exc))
            raise
        except BaseException as exc:
            if interrupted_by(exc):  # a library's own error raised while the interruption unwound through it
                self.end("interrupted", None)
                raise
            error = user_error_of(exc) or exc
            with suppress(MachineError):  # a full or read-only disk: the run's own error says so, not this one
                self.end("failed", f"{type(error).__name__}: {error}")
            raise
        self.end("completed", None)
        point_latest_at(self.path.parent)

    def end(self, status: str, error: str | None) -> None:
        """Record how the run (or this resume of it) ended."""
        ended = _now()
        if self.content.get("resumes"):
            self.content["resumes"][-1].update(status=status, error=error, ended_at=ended)
        if self.completed_before and status != "completed":
            status, error = "completed", None  # the earlier result stands; the failed attempt is in `resumes`
        self.write(status=status, error=error, ended_at=ended)


@rank_zero_only
def record(run_dir: Path, **entries: Any) -> None:
    """Add entries (of `RECORDED_BY_JOB`) to the run's manifest.json from inside the job, e.g. the privacy spent."""
    path = Path(run_dir) / MANIFEST_FILE
    write_json_atomically(path, {**(read_json(path) or {}), **entries})
