"""The run's JSON records: metrics.json and genlab-eval's records written atomically, and read back with one line
naming a file that is damaged."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError, check, one_line
from genlab.files import write_json_atomically
from genlab.run.layout import METRICS_FILE


def _plain(value: Any) -> Any:
    """A JSON-ready value: tensors (anything with `.item()`) to numbers, NaN/inf to None (JSON has no NaN)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


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
    """A JSON file of the run folder, or None when the run has not written it (yet); a file that is not a JSON
    object (empty, cut off, edited by hand) is one line naming it."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({one_line(str(exc))}); restore it or remove it") from exc
    check(isinstance(content, dict), f"{path} holds {type(content).__name__}, not a JSON object; restore or remove it")
    return content
