"""Writing files so that nothing is ever half-written: one temporary name per writer, then one rename."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from genlab.errors import machine_error


@contextmanager
def atomic_write(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to; it replaces `path` in one rename when the block ends, and is removed
    when the block fails. The temporary name is unique per writer (pid and a random part), so two processes writing
    the same file never write into each other's temporary file; the last rename wins, whole."""
    path = Path(path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield partial
        os.replace(partial, path)
    except OSError as exc:
        error = machine_error(exc, path, "; the file there before (if any) is untouched")
        if error is None:
            raise
        raise error from exc
    finally:
        with suppress(OSError):
            partial.unlink(missing_ok=True)


def write_text_atomically(path: Path, text: str) -> None:
    with atomic_write(path) as partial:
        partial.write_text(text, encoding="utf-8")


def write_bytes_atomically(path: Path, content: bytes) -> None:
    with atomic_write(path) as partial:
        partial.write_bytes(content)


def write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    write_text_atomically(path, json.dumps(content, indent=2, sort_keys=False) + "\n")


def writable_folder(folder: Path) -> Path:
    """`folder`, created if needed; one line when it cannot be written, before any work is done for it."""
    from genlab.errors import ConfigError

    folder = Path(folder)
    probe = folder / f".writable.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise machine_error(exc, folder) or ConfigError(
            f"cannot write into {folder} ({exc.strerror or exc}); give a folder you can write"
        ) from exc
    return folder
