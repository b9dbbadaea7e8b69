"""User-facing errors: one line that says what is wrong and what to do, never a traceback."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

from hydra.errors import HydraException, InstantiationException, MissingConfigException, OverrideParseException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError


class GenlabError(Exception):
    """An error caused by the user's input (config, data, files) rather than a bug in genlab."""


class ConfigError(GenlabError, ValueError):
    """A config value that can never work, detected before any data is loaded."""


class InputError(GenlabError, ValueError):
    """Arguments given to a model at call time (token ids, labels, lengths) that do not fit it: not a config value."""


class Pruned(Exception):
    """A sweep's pruner stopped this run early: its manifest says `pruned`, which is not a failure."""


class DataError(GenlabError):
    """Data that is missing, unreadable or does not fit the model."""


def check(condition: bool, message: str) -> None:
    """Raise a ConfigError with `message` unless `condition` holds."""
    if not condition:
        raise ConfigError(message)


def did_you_mean(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for the closest candidate to a misspelt `word`, or ''."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def one_line(text: str) -> str:
    """Hydra's and Lightning's several-line messages as one line."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _lightning_misconfiguration(exc: BaseException) -> bool:
    """Lightning's word for a setting that cannot work (imported only where Lightning already is)."""
    module = sys.modules.get("lightning_fabric.utilities.exceptions")
    return module is not None and isinstance(exc, module.MisconfigurationException)


def _hydra_message(exc: HydraException) -> str:
    """A Hydra composition error (unknown key or option, bad override syntax) as one line, with a suggestion."""
    if isinstance(exc, MissingConfigException) and exc.options:
        group, _, option = (exc.missing_cfg_file or "").rpartition("/")
        hint = did_you_mean(option, exc.options).replace("mean ", f"mean {group}=")
        first = str(exc).splitlines()[0]
        return f"{first}{hint}; available options in '{group}': {', '.join(sorted(exc.options))}"
    if isinstance(exc, OverrideParseException):
        return f"cannot parse the override {exc.override!r}: {str(exc).splitlines()[0]} (see Hydra's override grammar)"
    cause = exc.__cause__
    parent = getattr(cause, "parent_node", None)
    full_key = getattr(cause, "full_key", None)
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and parent is not None and full_key:
        prefix, _, key = full_key.rpartition(".")
        hint = did_you_mean(key, [str(k) for k in parent])
        hint = hint.replace("mean ", f"mean {prefix}.") if prefix else hint
        first = str(exc).splitlines()[0].rstrip(".")
        override = first.split("'")[1] if first.count("'") >= 2 else full_key
        return f"{first}: no such setting{hint}; to add a new one, use +{override}=..."
    return one_line(exc)


def user_error_of(exc: BaseException) -> GenlabError | None:
    """The GenlabError behind `exc`, also when Hydra's instantiate wrapped it."""
    seen: set[int] = set()
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, GenlabError):
            return current
        if _lightning_misconfiguration(current):
            return ConfigError(" ".join(str(current).split()))
        if isinstance(current, HydraException) and not isinstance(current, InstantiationException):
            return ConfigError(_hydra_message(current))
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
