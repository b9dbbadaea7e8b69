"""Optional domains (molecules, music, serving) live in pip extras; a user without one gets one line naming it."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

from genlab.errors import ConfigError


def import_extra(module: str, extra: str, needed_for: str) -> ModuleType:
    """`import module`, or a one-line error: `<needed_for> needs <module>: pip install "genlab[<extra>]"`."""
    try:
        return import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        message = f'{needed_for} needs {package}, which is not installed: pip install "genlab[{extra}]"'
        raise ConfigError(message) from exc
