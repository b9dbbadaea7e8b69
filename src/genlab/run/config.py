"""A run's saved config: read back (trusted targets only, genlab's resolvers registered) and changed by overrides."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

import genlab.config  # noqa: F401 - registers the resolvers a saved config uses (`${run_folder:...}`, `${judged:...}`)
from genlab.errors import ConfigError, check, did_you_mean, one_line
from genlab.run.layout import CONFIG_FILE
from genlab.trust import check_trusted
from genlab.upstream import parse_hydra_overrides


def read_config(path: Path) -> DictConfig:
    """A saved config (YAML); an empty or unreadable file is one line naming it."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml's and OmegaConf's parse errors
        raise ConfigError(f"{path} is not a readable config ({one_line(str(exc))[:200]}); restore it") from exc
    check(isinstance(cfg, DictConfig) and len(cfg) > 0, f"{path} is empty or not a mapping of settings; restore it")
    return cfg


def run_config(run_dir: Path, trust_by_name_only: bool = False) -> DictConfig:
    """The run's own saved config, its output folder pointed at `run_dir` (it was Hydra's runtime folder).

    Only configs whose every `_target_` genlab trusts are returned (`genlab.trust`): a run folder is data, not code.
    `trust_by_name_only` checks the targets' names without importing them (`resume=`'s checks before Hydra starts,
    which stay free of torch and Lightning; the job checks them whole before it builds anything).
    """
    path = run_dir / CONFIG_FILE
    cfg = read_config(path)
    check_trusted(cfg, path, trust_by_name_only)
    check("model" in cfg and "data" in cfg, f"{path} has no model or data settings; it is not a genlab-train config")
    if "paths" in cfg:
        cfg.paths.output_dir = str(run_dir)
    return cfg


_ABSENT = object()


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Apply `key=value` overrides (Hydra's syntax) to a saved config; a key it does not have is an error."""
    from hydra.errors import OverrideParseException

    try:
        parsed = parse_hydra_overrides(overrides)
    except OverrideParseException as exc:
        raise ConfigError(" ".join(str(exc).split())) from exc
    for override in parsed:
        key = override.key_or_group
        current = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_resolution_failure=False)
        if current is _ABSENT and not override.is_add():
            parent = key.rpartition(".")[0]
            node = OmegaConf.select(cfg, parent, default=None) if parent else cfg
            siblings = [f"{parent}.{k}" if parent else str(k) for k in node] if isinstance(node, DictConfig) else []
            raise ConfigError(
                f"{key} is not a setting of this run's config{did_you_mean(key, siblings)} "
                f"(see {CONFIG_FILE} in the run folder)"
            )
        check(not override.is_delete(), f"~{key}: settings of a run cannot be deleted, only changed")
        check(
            not isinstance(OmegaConf.select(cfg, key, default=None, throw_on_resolution_failure=False), DictConfig),
            f"{override.input_line}: a run's {key} settings cannot be swapped for others (a different model or data "
            f"is a different run); change single settings ({key}.<name>=...) or train a new run",
        )
        OmegaConf.update(cfg, key, override.value(), merge=False, force_add=override.is_add())
