"""What some tests need beyond genlab's core: an extra, a real dataset, a program. Without it such a test skips with
a reason naming what to install or set, so the README's `pip install -e ".[dev]"` then `pytest` is green on a fresh
machine; under CI=true (set by .ci/run) every skip is a failure instead (conftest's report hooks), so CI runs every
test and a missing piece cannot hide.

A module that imports an extra's package at its top starts with `pytest.importorskip(MODULE, reason=extra_hint(X))`;
a test that needs one carries `@requires_extra(X)`, `@requires_data(FOLDER)` or `@requires_programs(NAME)`.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from pathlib import Path

import pytest

#: The modules each optional extra of pyproject.toml provides (tests/test_first_hour.py checks the names agree).
EXTRAS: dict[str, tuple[str, ...]] = {
    "chem": ("rdkit", "fcd_torch", "selfies"),
    "music": ("music21",),
    "serve": ("fastapi", "uvicorn", "multipart"),
    "privacy": ("opacus",),
    "hf": ("transformers", "peft", "datasets", "safetensors"),
    "postgres": ("psycopg2",),
}
#: How a program the tests drive is installed.
PROGRAMS: dict[str, str] = {
    "chromium": "apt-get install chromium chromium-driver",
    "chromedriver": "apt-get install chromium chromium-driver",
    **dict.fromkeys(("slurmctld", "slurmd", "munged"), "apt-get install slurm-wlm munge (and run the tests as root)"),
    **dict.fromkeys(("initdb", "pg_ctl"), "apt-get install postgresql (and run the tests as root)"),
}
#: Where Debian keeps PostgreSQL's server programs (not on PATH), searched after PATH.
SERVER_FOLDERS = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(Path(path).parent.name))


def program(name: str) -> str | None:
    """The path of a program the tests drive, on PATH or in SERVER_FOLDERS (the newest version first)."""
    return shutil.which(name) or next(
        (found for folder in reversed(SERVER_FOLDERS) if (found := shutil.which(name, path=folder))), None
    )


#: The real datasets, under GENLAB_DATA_DIR or the ../shared/data beside the checkout.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def in_ci() -> bool:
    """CI=true (or 1, yes), as CI services and .ci/run set it."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def extra_hint(extra: str) -> str:
    return f'needs the {extra} extra ({", ".join(EXTRAS[extra])}): pip install -e ".[{extra}]"'


def importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a finder refused it, or sys.modules holds None for it
        return False


def data_dir() -> Path | None:
    """GENLAB_DATA_DIR, else the ../shared/data beside the checkout; None when that folder does not exist."""
    configured = os.environ.get("GENLAB_DATA_DIR")
    path = Path(configured) if configured else SHARED_DATA
    return path if path.is_dir() else None


def data_hint(relative: str) -> str:
    return f"needs the dataset {relative}: set GENLAB_DATA_DIR to the folder that holds it"


def missing_data(*relative: str) -> list[str]:
    root = data_dir()
    return [path for path in relative if root is None or not (root / path).exists()]


def require_data(relative: str) -> Path:
    """The data folder holding `relative`, for a test that reads it; a skip (naming GENLAB_DATA_DIR) without it."""
    if missing_data(relative):
        pytest.skip(data_hint(relative))
    root = data_dir()
    assert root is not None
    return root


def _marked(missing: list[str], reason: str) -> pytest.MarkDecorator:
    """The `needs` marker: skip_if_missing (conftest's setup hook, before any fixture) skips when `missing` is
    not empty; tests/test_first_hour.py runs every marked test with all requirements hidden."""
    return pytest.mark.needs(missing=bool(missing), reason=reason)


def skip_if_missing(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        if mark.kwargs["missing"]:
            pytest.skip(mark.kwargs["reason"])


def requires_extra(*extras: str) -> pytest.MarkDecorator:
    missing = [extra for extra in extras if not all(importable(module) for module in EXTRAS[extra])]
    return _marked(missing, "; ".join(extra_hint(extra) for extra in missing))


def requires_data(*relative: str) -> pytest.MarkDecorator:
    missing = missing_data(*relative)
    return _marked(missing, "; ".join(data_hint(path) for path in missing))


def requires_programs(*names: str) -> pytest.MarkDecorator:
    missing = [name for name in names if program(name) is None]
    return _marked(missing, "; ".join(f"needs the program {name}: {PROGRAMS[name]}" for name in missing))
