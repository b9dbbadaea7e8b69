"""Derived data kept between runs (the FID feature classifier, BPE vocabularies, decoded image folders): one way to
read, build and store a cache entry.

- A missing or unreadable entry (truncated, foreign, from an older genlab) is built again, never a failed run.
- One process builds an entry at a time: a file lock beside it, so the jobs of a parallel sweep wait for the first
  one's entry instead of each building their own (and each scoring FID with a different feature net).
- An unwritable cache folder is a warning: the entry is built for this run and not kept (`GENLAB_CACHE_DIR` moves
  the cache).
- Entries are written whole or not at all (`genlab.files.atomic_write`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from genlab.errors import MachineError
from genlab.files import atomic_write

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How long a process waits for another one building the same entry before building it itself, in seconds.
LOCK_TIMEOUT = 600.0


@dataclass
class Cached(Generic[T]):
    """A cache entry's value, where it lives, and whether this process built it."""

    value: T
    path: Path
    built: bool


def cached(
    path: Path,
    build: Callable[[], T],
    load: Callable[[Path], T],
    save: Callable[[T, Path], None],
    what: str,
) -> Cached[T]:
    """The entry at `path`: `load(path)` when it is readable, else `build()`, stored with `save(value, tmp_path)`."""
    from filelock import FileLock, Timeout

    path = Path(path)
    loaded = _load(path, load, what)
    if loaded is not None:
        return Cached(loaded, path, built=False)
    lock = FileLock(str(path.with_name(f".{path.name}.lock")))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=LOCK_TIMEOUT)
    except OSError as exc:
        _not_kept(path, what, exc)
        return Cached(build(), path, built=True)
    except Timeout:
        log.warning(
            "waited %.0f s for the %s at %s, built by another process; building it here", LOCK_TIMEOUT, what, path
        )
        return Cached(build(), path, built=True)
    try:
        loaded = _load(path, load, what)  # another process may have built it while this one waited
        if loaded is not None:
            return Cached(loaded, path, built=False)
        value = build()
        try:
            with atomic_write(path) as partial:
                save(value, partial)
        except (OSError, MachineError) as exc:  # a full or read-only cache disk: the run goes on without it
            _not_kept(path, what, exc)
        return Cached(value, path, built=True)
    finally:
        lock.release()


def _not_kept(path: Path, what: str, exc: OSError | MachineError) -> None:
    log.warning(
        "the cache folder %s is not writable (%s), so the %s is built for this run only; "
        "set GENLAB_CACHE_DIR to a writable folder to keep it",
        path.parent,
        (exc.strerror if isinstance(exc, OSError) else None) or exc,
        what,
    )


def _load(path: Path, load: Callable[[Path], T], what: str) -> T | None:
    if not path.is_file():
        return None
    try:
        return load(path)
    except Exception as exc:  # truncated, foreign or outdated: building it again costs less than a failed run
        log.warning("the cached %s at %s is unreadable (%s); building it again", what, path, exc)
        return None
