"""The run folder's files: their names, reading and writing them safely, and finding a run's config and checkpoints.

Light on purpose (no torch, no Lightning): `genlab-compare`, `--help` and the checks made before a run starts read
run folders without paying for the deep-learning imports.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError, check

CONFIG_FILE = Path(".hydra") / "config.yaml"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"


def _plain(value: Any) -> Any:
    """A JSON-ready value: tensors (anything with `.item()`) to numbers, NaN/inf to None (JSON has no NaN)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    """Write to a temporary file, then rename: a crash never leaves half a file where a good one was."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        partial.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_metrics(
    run_dir: Path,
    metrics: Mapping[str, Any],
    judged_metric: str,
    judged_mode: str,
    file_name: str = METRICS_FILE,
    **extra: Any,
) -> Path:
    """metrics.json (or genlab-eval's eval.json): a flat object of metrics plus the name and direction of the
    judged metric."""
    content = {name: _plain(value) for name, value in sorted(metrics.items())}
    content.update(judged_metric=judged_metric, judged_mode=judged_mode, **{k: _plain(v) for k, v in extra.items()})
    path = run_dir / file_name
    write_json_atomically(path, content)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run folder, or None when the run has not written it (yet)."""
    return json.loads(path.read_text()) if path.is_file() else None


# -- a run's config and checkpoints ------------------------------------------------------------------------------


def check_run_dir(path: str | Path, name: str = "run") -> Path:
    """The run folder as an absolute path, or one line saying why `path` is not one."""
    run_dir = Path(path).expanduser()
    if not (run_dir / CONFIG_FILE).is_file():
        reason = "does not exist" if not run_dir.exists() else f"has no {CONFIG_FILE}"
        raise ConfigError(
            f"{name}={path} is not a run folder ({reason}); give a folder made by genlab-train, "
            f"e.g. outputs/train/runs/<date>_<time>_<id>"
        )
    return run_dir.resolve()


def run_config(run_dir: Path) -> DictConfig:
    """The run's own saved config, its output folder pointed at `run_dir` (it was Hydra's runtime folder)."""
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    if "paths" in cfg:
        cfg.paths.output_dir = str(run_dir)
    return cfg


_ABSENT = object()


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Apply `key=value` overrides (Hydra's syntax) to a saved config; a key it does not have is an error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except OverrideParseException as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc
    for override in parsed:
        key = override.key_or_group
        check(
            override.is_add() or OmegaConf.select(cfg, key, default=_ABSENT) is not _ABSENT,
            f"{key} is not a setting of this run's config (see {CONFIG_FILE} in the run folder)",
        )
        check(not override.is_delete(), f"~{key}: settings of a run cannot be deleted, only changed")
        OmegaConf.update(cfg, key, override.value(), merge=False, force_add=override.is_add())


def checkpoint_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """Where the run's ModelCheckpoint wrote (callbacks.model_checkpoint.dirpath, `checkpoints/` by default)."""
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(dirpath) if dirpath else run_dir / "checkpoints"


def find_checkpoint(run_dir: Path, cfg: DictConfig, which: str) -> Path:
    """`best` (the one metrics.json describes; before the run wrote it, the newest best*.ckpt), `last`, or a path
    (relative to the working directory or to the run folder)."""
    folder = checkpoint_dir(cfg, run_dir)
    if which == "last":
        path = folder / "last.ckpt"
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
