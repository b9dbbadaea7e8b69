"""Building objects from the user's settings: what a library's own constructor rejects (a Trainer argument outside
Lightning's list, a strategy nobody registered, attention heads that do not divide the width) is one line naming the
setting and the library's message. An error raised by genlab's own code keeps its traceback: that is a bug."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from genlab.errors import ConfigError, GenlabError, one_line

#: What a library raises about the values it was given (Lightning's MisconfigurationException is checked apart).
REFUSALS = (ValueError, TypeError, AssertionError, LookupError, ImportError)
_GENLAB = str(Path(__file__).resolve().parent)


def _raising_package(tb: TracebackType | None) -> str | None:
    """The top-level package whose code raised the error of `tb` (its innermost frame); None for genlab's own."""
    last = None
    while tb is not None:
        last, tb = tb, tb.tb_next
    if last is None or str(Path(last.tb_frame.f_code.co_filename).resolve()).startswith(_GENLAB):
        return None
    return str(last.tb_frame.f_globals.get("__name__", "a library")).split(".")[0]


def _original(exc: BaseException) -> BaseException:
    """The error behind Hydra's InstantiationException (which only wraps what the constructor raised)."""
    from hydra.errors import InstantiationException

    while isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _misconfiguration(exc: BaseException) -> bool:
    module = sys.modules.get("lightning_fabric.utilities.exceptions")
    return module is not None and isinstance(exc, module.MisconfigurationException)


def _named_setting(path: str, settings: Mapping[str, Any], message: str) -> str:
    """`path.key=value` for the setting the library's message is about (its name, best with its value, in the
    message), else `path`."""
    best, score = path, 0
    for key, value in settings.items():
        key = str(key)
        if key.startswith("_") or not isinstance(value, (str, int, float, bool, type(None))):
            continue
        named = bool(re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message, re.IGNORECASE))
        valued = value is not None and str(value) != "" and str(value) in message
        points = 2 * named + valued if named else 0
        if points > score:
            best, score = f"{path}.{key}={value}", points
    return best


def refused_settings(path: str, settings: Mapping[str, Any] | None, exc: BaseException) -> ConfigError | None:
    """The one line for `exc`, raised while building the object of the settings at `path`, when a library's own
    check refused them; None for anything else (genlab's errors speak for themselves, bugs keep their traceback)."""
    original = _original(exc)
    if isinstance(original, GenlabError):
        return None
    package = _raising_package(original.__traceback__)
    if package is None or not (_misconfiguration(original) or isinstance(original, REFUSALS)):
        return None
    message = one_line(str(original)) or type(original).__name__
    where = _named_setting(path, settings or {}, message)
    return ConfigError(f"{where}: {message} ({package} refused it; check {path}.*)")


@contextmanager
def building(path: str, settings: Mapping[str, Any] | None = None) -> Iterator[None]:
    """Translate what the library refuses while the block builds the object of the settings at `path`."""
    try:
        yield
    except Exception as exc:
        error = refused_settings(path, settings, exc)
        if error is None:
            raise
        raise error from exc


def build(path: str, node: Any, *args: Any, **kwargs: Any) -> Any:
    """Hydra's `instantiate(node, ...)` for the settings at `path` (e.g. `trainer`, `callbacks.early_stopping`)."""
    from hydra.utils import instantiate

    with building(path, node):
        return instantiate(node, *args, **kwargs)
