"""One check of a composed config before anything is built or any data is read.

Every node with a `_target_` is checked against the signature of what it builds: settings it does not take (with a
suggestion), and each value against the parameter's type hint, ranges included (`genlab.settings`). The constructors'
signatures are the schema, so there is nothing to keep in step. Settings without a target (seed, test, ...) are
checked against `ROOT_SETTINGS`. A bad value is one line naming the key, the value and what is allowed.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from annotated_types import Ge, Gt, Interval, Le, Lt, MultipleOf
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException

from genlab.errors import ConfigError, did_you_mean, one_line
from genlab.settings import PositiveInt
from genlab.threads import THREADS

#: The top-level settings of `genlab-train` that no class takes: their types.
ROOT_SETTINGS: dict[str, Any] = {
    "task_name": str,
    "seed": int,
    "test": bool,
    "ckpt_path": str | None,
    "resume": str | bool | None,  # RUN_DIR, or true to continue a sweep (-m) in hydra.sweep.dir
    "threads": THREADS,
    "steps_per_execution": PositiveInt,
    # where the trial of a job of genlab's Optuna sweeper lives: storage, study and trial number (conf/train.yaml)
    "optuna": dict[str, str | int | None],
}
#: Top-level groups: each holds a node with a `_target_`, a mapping of them (callbacks, logger), or nothing.
ROOT_GROUPS = ("data", "model", "trainer", "metrics", "callbacks", "logger", "paths", "privacy")


def resolved(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain data with every interpolation resolved; a value left unset (`???`) is one line."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)  # type: ignore[return-value]
    except MissingMandatoryValue as exc:
        key = exc.full_key or "a setting"
        raise ConfigError(f"{key} must be set: add {key}=... to the command") from exc
    except OmegaConfBaseException as exc:
        raise ConfigError(one_line(str(exc).split("full_key:")[0])) from exc


def validate_train_config(cfg: DictConfig, injected: Mapping[str, tuple[str, ...]] | None = None) -> dict[str, Any]:
    """Check the whole `genlab-train` config; returns it resolved. `injected` names, per node, the arguments the
    code passes itself (e.g. the data's spec to the model): a config that sets them is refused."""
    if "hydra" in cfg:  # composed with Hydra's own settings (tests, the compose API): those are Hydra's to check
        cfg = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    values = resolved(cfg)
    unknown = [key for key in values if key not in ROOT_SETTINGS and key not in ROOT_GROUPS]
    if unknown:
        known = [*ROOT_SETTINGS, *ROOT_GROUPS]
        key = unknown[0]
        raise ConfigError(
            f"{key} is not a genlab-train setting{did_you_mean(key, known)}; the top level has: {', '.join(known)}"
        )
    for key, annotation in ROOT_SETTINGS.items():
        if key in values:
            check_value(key, values[key], annotation)
    for path, node in target_nodes(values):
        check_node(path, node, (injected or {}).get(path, ()))
    try_optimizers(values)
    return values


def try_optimizers(values: Mapping[str, Any]) -> None:
    """Build each configured optimizer (and the scheduler beside it) on one dummy parameter: torch checks its own
    settings (a negative learning rate, betas outside [0, 1)) only when the model's optimizers are built, which is
    after the data is read and the model built."""
    import torch
    from hydra.utils import get_object

    optimizers: dict[str, torch.optim.Optimizer] = {}
    nodes = [(path, node) for path, node in target_nodes(values) if node.get("_partial_")]
    for path, node in nodes:
        target = get_object(node["_target_"])
        if inspect.isclass(target) and issubclass(target, torch.optim.Optimizer):
            optimizers[path] = _built(path, node, [torch.nn.Parameter(torch.zeros(1))])
    for path, node in nodes:
        parameters = list(signature_parameters(get_object(node["_target_"])))
        if parameters[:1] == ["optimizer"]:
            paired = optimizers.get(path.replace("scheduler", "optimizer"))
            _built(path, node, paired or torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))


def signature_parameters(target: Any) -> Mapping[str, inspect.Parameter]:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):
        return {}


def _built(path: str, node: Mapping[str, Any], argument: Any) -> Any:
    """The partial config `node` called with `argument`; what it raises about its settings is one line."""
    from hydra.utils import instantiate

    from genlab.building import building

    with building(path, node):
        try:
            return instantiate(dict(node))(argument)
        except ConfigError as exc:  # genlab's own check of its settings (a scheduler's, say)
            raise ConfigError(f"{path}: {exc}") from exc


def target_nodes(values: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every mapping with a `_target_` in `values`, outermost first, with its dotted path."""
    if isinstance(values, dict):
        if "_target_" in values:
            yield path, values
        for key, value in values.items():
            yield from target_nodes(value, f"{path}.{key}" if path else str(key))
    elif isinstance(values, list):
        for index, value in enumerate(values):
            yield from target_nodes(value, f"{path}[{index}]")


def check_node(path: str, node: Mapping[str, Any], injected: tuple[str, ...] = ()) -> None:
    """One node against the signature of its `_target_`: known settings only, each of the hinted type and range."""
    target = import_target(path, node["_target_"])
    accepted = accepted_settings(target)
    if accepted is None:  # a builtin without a signature: nothing to check it against
        return
    hints, takes_any = accepted
    settable = [name for name in hints if name not in injected]
    name = getattr(target, "__name__", str(target))
    for key, value in node.items():
        key = str(key)
        if key.startswith("_"):
            continue
        where = f"{path}.{key}" if path else key
        if key in injected:
            raise ConfigError(f"{where} is set by genlab itself, not by the config; remove it")
        if key not in hints:
            if takes_any:
                continue
            raise ConfigError(
                f"{path or 'the config'} has no setting {key}{did_you_mean(key, settable)}; "
                f"{name} takes: {', '.join(settable)}"
            )
        if isinstance(value, dict) and "_target_" in value:
            continue  # checked as a node of its own
        if hints[key] is not None:
            check_value(where, value, hints[key])


@cache
def accepted_settings(target: Any) -> tuple[dict[str, Any], bool] | None:
    """The arguments `target` takes (name -> type hint, None where there is none) and whether it takes any keyword.

    A genlab class whose constructor passes `**kwargs` on (the datamodules) takes its base classes' arguments too.
    """
    functions = _constructors(target)
    hints: dict[str, Any] = {}
    takes_any = False
    for function in functions:
        try:
            parameters = inspect.signature(function).parameters
        except (TypeError, ValueError):
            return None
        function_hints = _hints(function)
        for name, parameter in parameters.items():
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                takes_any = function is functions[-1]
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL and name != "self":
                hints.setdefault(name, function_hints.get(name))
    return hints, takes_any


def _constructors(target: Any) -> list[Any]:
    """The function a config node calls, then the base-class constructors its `**kwargs` reach (genlab's own)."""
    if not inspect.isclass(target):
        return [target]
    chain = []
    for cls in target.__mro__:
        function = cls.__dict__.get("__init__")
        if function is None:
            continue
        if chain and not cls.__module__.startswith("genlab."):
            break
        chain.append(function)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(function).parameters.values()):
            break
    return chain or [target]


def import_target(path: str, target: Any) -> Any:
    from hydra.utils import get_object

    if not isinstance(target, str) or not target:
        raise ConfigError(f"{path}._target_ must be the dotted name of a class or function, got {target!r}")
    try:
        return get_object(target)
    except Exception as exc:
        raise ConfigError(f"{path}._target_={target} cannot be imported ({one_line(str(exc))[:200]})") from exc


@cache
def _hints(function: Any) -> dict[str, Any]:
    """A function's type hints; where one cannot be evaluated (a name imported for type checking only), the others."""
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception:
        hints = {}
        scope = getattr(inspect.unwrap(function), "__globals__", {})
        for name, annotation in getattr(function, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, scope) if isinstance(annotation, str) else annotation
            except Exception:
                continue
        return hints


def check_value(where: str, value: Any, annotation: Any) -> None:
    """`value` of `annotation`'s type and range, or one line naming the key, the value and what is allowed."""
    from pydantic import ValidationError

    try:
        _adapter(annotation).validate_python(value)
    except ValidationError as exc:
        raise ConfigError(f"{where}={_show(value)} is not allowed: expected {describe(annotation)}") from exc
    except Exception:  # a hint pydantic cannot check (an exotic type): the constructor will
        return


@cache
def _adapter(annotation: Any) -> Any:
    from pydantic import ConfigDict, TypeAdapter

    return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))


def _show(value: Any) -> str:
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)


_CONSTRAINTS: dict[type, Callable[[Any], str]] = {
    Gt: lambda c: f"> {c.gt}",
    Ge: lambda c: f">= {c.ge}",
    Lt: lambda c: f"< {c.lt}",
    Le: lambda c: f"<= {c.le}",
    MultipleOf: lambda c: f"a multiple of {c.multiple_of}",
}
_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
_PLURALS = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}


def describe(annotation: Any, plural: bool = False) -> str:
    """What a type hint allows, in words: `Annotated[int, Gt(0)]` -> 'an integer > 0'."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        base, *metadata = arguments
        limits, min_length = [], 0
        for item in metadata:
            parts = list(item) if isinstance(item, Interval) else [item]
            limits += [_CONSTRAINTS[type(part)](part) for part in parts if type(part) in _CONSTRAINTS]
            min_length = max(min_length, getattr(item, "min_length", 0))
        described = " ".join([describe(base, plural), " and ".join(limits)]).strip()
        return f"a non-empty {described.removeprefix('a ')}" if min_length == 1 else described
    if origin is typing.Literal:
        return "one of " + ", ".join(_show(choice) for choice in arguments)
    if origin in (typing.Union, types.UnionType):
        literals = [a for a in arguments if typing.get_origin(a) is typing.Literal]
        choices = [choice for literal in literals for choice in typing.get_args(literal)]
        others = [describe(a, plural) for a in arguments if a not in literals]
        return " or ".join((["one of " + ", ".join(_show(c) for c in choices)] if choices else []) + others)
    if origin in (list, tuple, Sequence) or annotation in (list, tuple, Sequence):
        items = [a for a in arguments if a is not Ellipsis]
        return f"a list of {describe(items[0], plural=True)}" if items else "a list"
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return "a mapping"
    if plural:
        return _PLURALS.get(annotation, f"{describe(annotation)} each")
    return _NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))
