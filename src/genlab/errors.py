"""User-facing errors: one line that says what is wrong and what to do, never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from hydra.errors import InstantiationException
from lightning_fabric.utilities.exceptions import MisconfigurationException


class GenlabError(Exception):
    """An error caused by the user's input (config, data, files) rather than a bug in genlab."""


class ConfigError(GenlabError, ValueError):
    """A config value that can never work, detected before any data is loaded."""


class DataError(GenlabError):
    """Data that is missing, unreadable or does not fit the model."""


def check(condition: bool, message: str) -> None:
    """Raise a ConfigError with `message` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def user_error_of(exc: BaseException) -> GenlabError | None:
    """The GenlabError behind `exc`, also when Hydra's instantiate wrapped it."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, GenlabError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    if isinstance(exc, MisconfigurationException):  # Lightning's word for a setting that cannot work
        return ConfigError(" ".join(str(exc).split()))
    if isinstance(exc, InstantiationException):
        # A bad argument to a config `_target_` (e.g. a misspelt key): Hydra's message names the target.
        return ConfigError(" ".join(str(exc).split()))
    return None


@contextmanager
def exit_on_user_error(program: str, exit: Callable[[int], object] = sys.exit) -> Iterator[None]:
    """Turn a user error into one line on stderr and exit status 2; let real bugs raise with a traceback."""
    try:
        yield
    except Exception as exc:
        error = user_error_of(exc)
        if error is None:
            raise
        print(f"{program}: error: {error}", file=sys.stderr, flush=True)
        exit(2)
