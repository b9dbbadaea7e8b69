"""What genlab-eval and genlab-sample share: their own settings from conf/<name>.yaml, the rest for the run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genlab.config import config_dir
from genlab.errors import ConfigError, check, did_you_mean, exit_on_user_error, one_line
from genlab.threads import THREADS, use_threads
from genlab.validation import ROOT_GROUPS, ROOT_SETTINGS, check_value

#: The top-level keys of a run's saved config, which the command's other arguments change.
RUN_KEYS = (*ROOT_SETTINGS, *ROOT_GROUPS)


def split_arguments(program: str, name: str, arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """`key=value` arguments for the command's own config (its top-level keys) and for the run's saved config.

    A word that is neither (a misspelt setting of the command) is one line with a suggestion.
    """
    own_keys = [str(key) for key in OmegaConf.load(config_dir() / f"{name}.yaml")]
    own: list[str] = []
    run: list[str] = []
    for argument in arguments:
        check("=" in argument, f"{argument!r} is not a setting; write key=value, e.g. run=outputs/train/runs/...")
        key = argument.split("=", 1)[0].lstrip("+~")
        top = key.split(".")[0]
        if top in own_keys:
            own.append(argument)
            continue
        check(
            top in RUN_KEYS,
            f"{key} is not a {program} setting{did_you_mean(key, own_keys)} nor a setting of the run's config; "
            f"{program} takes: {', '.join(own_keys)}, and the run's settings (e.g. model.eval_iwae_k=1000)",
        )
        run.append(argument)
    return own, run


def check_settings(cfg: DictConfig, settings: Mapping[str, Any]) -> None:
    """The command's own settings, each of its type and range (one line naming the key otherwise)."""
    for key, annotation in settings.items():
        check_value(key, cfg.get(key), annotation)


def command_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """conf/<name>.yaml composed by Hydra with the command's own overrides; `run=` is required."""
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(one_line(str(exc))) from exc
    check(cfg.get("run") is not None, "give the run folder: run=outputs/train/runs/<date>_<time>_<id>")
    return cfg


def run_command(
    program: str, name: str, settings: Mapping[str, Any], body: Callable[[DictConfig, list[str]], object]
) -> None:
    """The console script: `--help` prints conf/<name>.yaml; the command's settings are checked against `settings`
    (key -> type hint); user errors print one line and exit with status 2."""
    arguments = sys.argv[1:]
    if {"-h", "--help"} & set(arguments):
        print((config_dir() / f"{name}.yaml").read_text(), end="")
        return
    with exit_on_user_error(program):
        own, run_overrides = split_arguments(program, name, arguments)
        cfg = command_config(name, own)
        check_settings(cfg, {**settings, "threads": THREADS})
        use_threads(cfg.get("threads"))
        body(cfg, run_overrides)
