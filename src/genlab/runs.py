"""The run folder, the unit users hold: where its files are and how its final metrics are written."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.json"


def _plain(value: Any) -> Any:
    """A JSON-ready number: tensors to floats, NaN/inf to None (JSON has no NaN)."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json_atomically(path: Path, content: Mapping[str, Any]) -> None:
    """Write to a temporary file, then rename: a crash never leaves half a file where a good one was."""
    partial = path.with_name(f".{path.name}.tmp")
    partial.write_text(json.dumps(content, indent=2, sort_keys=False) + "\n")
    os.replace(partial, path)


def write_metrics(
    run_dir: Path, metrics: Mapping[str, Any], judged_metric: str, judged_mode: str, **extra: Any
) -> Path:
    """metrics.json: a flat object of final metrics plus the name and direction of the judged metric."""
    content = {name: _plain(value) for name, value in sorted(metrics.items())}
    content.update(judged_metric=judged_metric, judged_mode=judged_mode, **{k: _plain(v) for k, v in extra.items()})
    path = run_dir / METRICS_FILE
    write_json_atomically(path, content)
    return path
