"""One process writes a run folder at a time.

Training (a new run, or `resume=`) holds an exclusive lock on `RUN/.lock` for the life of the job: `flock` on an
open file, which the operating system releases when the process ends however it ends (even SIGKILL), so a stale lock
never blocks a folder. The holder writes its pid, host and start time into the file, so a refused `resume=` can say
who is writing. `genlab-eval` and `genlab-sample` need no lock: their files have names of their own.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from genlab.errors import ConfigError
from genlab.run.layout import LOCK_FILE


def _try_lock(handle: IO[str]) -> bool:
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def holder(run_dir: Path) -> dict[str, Any] | None:
    """Who is writing `run_dir` now (pid, host, since), or None when nobody is."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    with path.open("r+") as handle:
        if _try_lock(handle):
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            return None
        try:
            return json.loads(path.read_text() or "{}")
        except ValueError:
            return {}


def busy_message(run_dir: Path, who: dict[str, Any]) -> str:
    where = f"process {who.get('pid', '?')} on host {who.get('host', '?')}, since {who.get('since', '?')}"
    return f"{run_dir} is being written by another genlab-train ({where}); wait for it to end or stop that process"


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold the run folder's lock for the block, or stop with one line naming the process that holds it."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handle = (run_dir / LOCK_FILE).open("a+")
    try:
        if not _try_lock(handle):
            handle.seek(0)
            try:
                who = json.loads(handle.read() or "{}")
            except ValueError:
                who = {}
            raise ConfigError(busy_message(run_dir, who))
        handle.seek(0)
        handle.truncate()
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
        handle.flush()
        yield
    finally:
        handle.close()  # closing the file releases the lock
