"""The search space of `hydra.sweeper.params` (and of `-m` overrides that sweep) as Optuna distributions.

The syntax is Hydra's sweep syntax, as the old hydra-optuna-sweeper read it: `choice(a, b)` or `a,b` (categorical),
`range(1, 10)` (integers, as a categorical), `interval(0.1, 1)` (uniform), `int(interval(1, 8))` (integers),
`tag(log, interval(1e-4, 1e-2))` (log-uniform). Anything else is a fixed override given to every trial.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep

from genlab.errors import ConfigError
from genlab.upstream import parse_hydra_overrides

#: Override values Hydra reads back unchanged without quotes.
_PLAIN = re.compile(r"[\w.+-]+")


def distribution(override: Override) -> Any:
    """The Optuna distribution of one sweep override."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    sweep = override.value()
    key = override.get_key_element()
    if isinstance(sweep, ChoiceSweep):
        return CategoricalDistribution(list(sweep.list))
    if isinstance(sweep, RangeSweep):
        return CategoricalDistribution(list(override.sweep_iterator()))
    if isinstance(sweep, IntervalSweep):
        log = "log" in sweep.tags
        if "int" in sweep.tags or (isinstance(sweep.start, int) and isinstance(sweep.end, int)):
            return IntDistribution(int(sweep.start), int(sweep.end), log=log)
        return FloatDistribution(float(sweep.start), float(sweep.end), log=log)
    raise ConfigError(f"hydra.sweeper.params.{key}: {override.input_line!r} is not a search space Optuna can sample")


def search_space(params: Mapping[str, str] | None, arguments: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """({key: distribution}, fixed overrides) from the sweeper's params and the command line's overrides; a key on
    the command line wins over the same key in params."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()]
    space: dict[str, Any] = {}
    fixed: dict[str, str] = {}
    for override in parse_hydra_overrides([*lines, *arguments]):
        key = override.get_key_element()
        space.pop(key, None)
        fixed.pop(key, None)
        if override.is_sweep_override():
            space[key] = distribution(override)
        else:
            fixed[key] = override.input_line
    return space, list(fixed.values())


def as_override(key: str, value: Any) -> str:
    """`key=value` that Hydra parses back to `value` (strings with other characters are quoted)."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif value is None:
        text = "null"
    elif isinstance(value, str) and not _PLAIN.fullmatch(value):
        text = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    else:
        text = str(value)
    return f"{key}={text}"
