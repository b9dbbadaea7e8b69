"""GET /info: what is served (model, data spec, judged metric, config summary, manifest), without the server's paths.

Run folders hold absolute paths (the working folder, data and cache folders, the command line): every string of the
answer has them cut to their last component, so the answer tells nothing of the server's file system.
"""

from __future__ import annotations

import re
from typing import Any

from omegaconf import OmegaConf

from genlab.run.loading import LoadedRun

#: An absolute path (POSIX, home-relative, or Windows) at the start of a string or after a separator.
ABSOLUTE_PATH = re.compile(r"(?:(?<=^)|(?<=[\s=:'\",(\[]))(?:~|[A-Za-z]:)?[/\\][^\s'\",;)\]]*")


def without_paths(value: Any) -> Any:
    """`value` (JSON-like) with every absolute path in its strings replaced by its last component."""
    if isinstance(value, str):
        return ABSOLUTE_PATH.sub(lambda m: re.split(r"[/\\]", m.group(0).rstrip("/\\"))[-1], value)
    if isinstance(value, dict):
        return {key: without_paths(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [without_paths(item) for item in value]
    return value


def config_summary(run: LoadedRun) -> dict[str, Any]:
    """The model and data settings as saved (interpolations unresolved: they would resolve to local paths)."""
    cfg = run.config
    return {
        "model": OmegaConf.to_container(cfg.model, resolve=False),
        "data": OmegaConf.to_container(cfg.data, resolve=False),
        "seed": cfg.get("seed"),
    }


def run_info(run: LoadedRun, model_name: str, served: dict[str, Any]) -> dict[str, Any]:
    """The static part of /info; `served` describes the endpoint and its limits."""
    model = run.model
    spec = model.spec
    metrics = run.metrics or {}
    judged = model.judged_metric
    tokenizer = getattr(spec, "tokenizer", None) or getattr(model, "tokenizer", None)
    manifest = {key: value for key, value in (run.manifest or {}).items() if key != "cwd"}
    info = {
        "model": {
            "name": model_name,
            "class": type(model).__name__,
            "kind": spec.kind,
            "parameters": sum(p.numel() for p in model.parameters()),
            "device": str(model.device),
        },
        "data_spec": {
            "name": spec.name,
            "kind": spec.kind,
            "shape": list(spec.shape),
            "value_range": list(spec.value_range),
            "num_classes": spec.num_classes,
            "vocab_size": spec.vocab_size,
            "tokenizer": getattr(tokenizer, "kind", None),
        },
        "judged_metric": {"name": judged, "mode": model.judged_mode, "value": metrics.get(judged)},
        "run": {
            "folder": run.dir.name,
            "checkpoint": run.checkpoint.name,
            "epoch": run.epoch,
            "global_step": run.global_step,
        },
        "config": config_summary(run),
        "manifest": manifest,
    }
    return {**without_paths(info), **served}
