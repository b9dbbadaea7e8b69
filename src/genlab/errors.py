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
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, GenlabError):
            return current
        if isinstance(current, MisconfigurationException):  # Lightning's word for a setting that cannot work
            return ConfigError(" ".join(str(current).split()))
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    # Hydra could not call a config's `_target_` with its settings (a wrong key or type, a target that does not
    # import): its message names the target. Any other error inside a constructor is a bug and keeps its traceback.
    if isinstance(exc, InstantiationException) and all(
        isinstance(e, (InstantiationException, TypeError, ImportError)) for e in chain
    ):
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
