"""A run folder is data, not code: what genlab will build from a config read back from one.

`genlab-eval`, `genlab-sample`, `genlab.load_run` and `resume=` instantiate the `_target_`s of a saved config. A
folder someone shared could name any callable there (Hydra's own blocklist still lets `builtins.open(path, "w")` or
`pathlib.Path.touch` through), so every `_target_` is checked against this allowlist before anything is imported or
built: genlab's classes (and its learning-rate schedules), torch's optimizers and schedulers, Lightning's Trainer,
callbacks and loggers. `GENLAB_TRUSTED_TARGETS` (comma-separated names or prefixes ending in '.') adds your own.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from importlib import import_module
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig

from genlab.errors import ConfigError
from genlab.upstream import config_child_node, unresolved_value

#: Modules whose classes a run folder may name.
TRUSTED_CLASS_MODULES = (
    "genlab.",
    "torch.optim.",
    "pytorch_lightning.callbacks.",
    "pytorch_lightning.loggers.",
    "lightning.pytorch.callbacks.",
    "lightning.pytorch.loggers.",
)
#: Single names a run folder may name: the Trainer, and genlab's schedule functions.
TRUSTED_NAMES = ("pytorch_lightning.Trainer", "lightning.pytorch.Trainer")
TRUSTED_FUNCTION_MODULES = ("genlab.models.schedules.",)
TRUSTED_ENV = "GENLAB_TRUSTED_TARGETS"


def targets(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every `_target_` value of a config, unresolved (an interpolation is not a plain name), with its key."""
    if isinstance(node, DictConfig):
        for key in node:
            where = f"{path}.{key}" if path else str(key)
            if key == "_target_":
                yield where, unresolved_value(node, key)
            else:
                yield from targets(config_child_node(node, key), where)
    elif isinstance(node, ListConfig):
        for index in range(len(node)):
            yield from targets(config_child_node(node, index), f"{path}[{index}]")


def _user_trusted() -> tuple[str, ...]:
    return tuple(name.strip() for name in os.environ.get(TRUSTED_ENV, "").split(",") if name.strip())


def is_trusted(name: str, by_name_only: bool = False) -> bool:
    """Whether genlab builds `name` from a run folder: by its dotted name first (nothing is imported for a name
    outside the allowlist), then by what it is (a class; a function only from genlab's schedules), unless
    `by_name_only` (checks that must not import the targets; the full check runs again before anything is built)."""
    user = _user_trusted()
    if name in user or any(entry.endswith(".") and name.startswith(entry) for entry in user):
        return True
    if name in TRUSTED_NAMES:
        return True
    if not name.startswith(TRUSTED_CLASS_MODULES + TRUSTED_FUNCTION_MODULES):
        return False
    if by_name_only:
        return True
    try:
        found = _resolve(name)
    except (ImportError, AttributeError):
        return True  # not importable: building it fails with its own one-line error, and nothing runs
    if inspect.isclass(found):
        return name.startswith(TRUSTED_CLASS_MODULES)
    return name.startswith(TRUSTED_FUNCTION_MODULES) and inspect.isfunction(found)


def _resolve(name: str) -> Any:
    module_name, _, attribute = name.rpartition(".")
    return getattr(import_module(module_name), attribute)


def check_trusted(cfg: DictConfig, source: Path, by_name_only: bool = False) -> None:
    """Refuse a config read from `source` whose `_target_`s are not all on the allowlist, before anything is built."""
    for key, value in targets(cfg):
        if not isinstance(value, str) or "${" in value or not is_trusted(value, by_name_only):
            raise ConfigError(
                f"{source}: {key}={value!r} is not something genlab builds from a run folder (it builds genlab's "
                f"classes, torch optimizers and schedulers, Lightning's Trainer, callbacks and loggers); if you trust "
                f"this folder, add it to {TRUSTED_ENV}"
            )
