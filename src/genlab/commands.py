"""What genlab-eval and genlab-sample share: their own settings from conf/<name>.yaml, the rest for the run."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genlab.config import config_dir
from genlab.errors import ConfigError, check, exit_on_user_error


def split_arguments(name: str, arguments: Sequence[str]) -> tuple[list[str], list[str]]:
    """`key=value` arguments for the command's own config (its top-level keys) and for the run's saved config."""
    own_keys = set(OmegaConf.load(config_dir() / f"{name}.yaml").keys())
    own: list[str] = []
    run: list[str] = []
    for argument in arguments:
        key = argument.split("=", 1)[0].lstrip("+~")
        (own if key.split(".")[0] in own_keys else run).append(argument)
    return own, run


def command_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """conf/<name>.yaml composed by Hydra with the command's own overrides; `run=` is required."""
    try:
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(config_name=name, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc
    check(cfg.get("run") is not None, "give the run folder: run=outputs/train/runs/<date>_<time>_<id>")
    return cfg


def run_command(program: str, name: str, body: Callable[[DictConfig, list[str]], object]) -> None:
    """The console script: `--help` prints conf/<name>.yaml; user errors print one line and exit with status 2."""
    arguments = sys.argv[1:]
    if {"-h", "--help"} & set(arguments):
        print((config_dir() / f"{name}.yaml").read_text(), end="")
        return
    with exit_on_user_error(program):
        own, run_overrides = split_arguments(name, arguments)
        body(command_config(name, own), run_overrides)
