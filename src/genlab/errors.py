"""User-facing errors: one line that says what is wrong and what to do, never a traceback."""

from __future__ import annotations

import difflib
import errno
import os
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


class MachineError(GenlabError):
    """What the machine could not give the run: disk space, memory, a writable folder, a path of the right kind."""


class NumericalError(GenlabError):
    """Numbers that stopped being numbers: a NaN or infinite loss, or weights that became so."""


#: The errors of a path that are the machine's or the user's, not genlab's, and what to do about each.
PATH_ADVICE = {
    errno.ENOSPC: "free space on that disk, or write elsewhere (paths.log_dir=..., paths.cache_dir=...)",
    errno.EDQUOT: "free space within your quota, or write elsewhere (paths.log_dir=..., paths.cache_dir=...)",
    errno.EROFS: "that file system is read-only: write elsewhere (paths.log_dir=..., paths.cache_dir=...)",
    errno.EACCES: "you may not write there: fix its permissions or write elsewhere",
    errno.EPERM: "you may not write there: fix its permissions or write elsewhere",
    errno.ENOTDIR: "a part of that path is a file, not a folder: move the file away or give another path",
    errno.EEXIST: "that path is a file where a folder is needed: move the file away or give another path",
    errno.EISDIR: "that path is a folder where a file is needed: move the folder away or give another path",
    errno.ENAMETOOLONG: "give a shorter path",
}


def machine_error(exc: OSError, path: os.PathLike | str | None = None, then: str = "") -> MachineError | None:
    """One line for an OSError of the kinds in PATH_ADVICE, naming the path and what to do; None for others."""
    advice = PATH_ADVICE.get(exc.errno or 0)
    if advice is None:
        return None
    where = path if path is not None else exc.filename
    reason = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
    name = errno.errorcode.get(exc.errno or 0, "")
    # A folder above the path is where it went wrong (a file where a folder should be): name that one too.
    above = exc.filename and where and os.fspath(where).startswith(os.fspath(exc.filename) + os.sep)
    at = f" at {exc.filename}" if above else ""
    return MachineError(f"cannot write {where}: {reason} ({name}){at}; {advice}{then}")


def out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory error (CPU or GPU) or Python's MemoryError."""
    torch = sys.modules.get("torch")
    return isinstance(exc, MemoryError) or (torch is not None and isinstance(exc, torch.OutOfMemoryError))


#: What to try when training produces NaN or infinity, for every message that reports it.
NON_FINITE_ADVICE = (
    "lower the learning rate (model.optimizer.lr), clip gradients (trainer.gradient_clip_val=1.0), train in full "
    "precision (trainer.precision=32-true) or check the data"
)


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
        if isinstance(current, OSError) and (found := machine_error(current)) is not None:
            return found
        if out_of_memory(current):
            first = one_line(str(current)).split("; ")[0][:300] or type(current).__name__
            return MachineError(
                f"out of memory ({first}); use a smaller batch (data.batch_size=..., or the command's batch "
                f"setting), a smaller model, or trainer.precision=bf16-mixed; on a GPU, see what else holds its "
                f"memory (nvidia-smi)"
            )
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
