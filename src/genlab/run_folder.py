"""The run folder's files: their names, reading and writing them safely, and finding a run's config and checkpoints.

Light on purpose (no torch, no Lightning): `genlab-compare`, `--help` and the checks made before a run starts read
run folders without paying for the deep-learning imports.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from genlab.errors import ConfigError, check, did_you_mean, exit_on_user_error, one_line
from genlab.files import write_json_atomically
from genlab.trust import check_trusted
from genlab.upstream import parse_hydra_overrides

CONFIG_FILE = Path(".hydra") / "config.yaml"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
#: Where a run keeps its checkpoints, and the name of the one written after every validation (what `resume=`
#: continues from). The callbacks config reads both through the `${run_folder:...}` resolver.
CHECKPOINTS = "checkpoints"
LAST = "last"
LAYOUT = {"checkpoints": CHECKPOINTS, "last": LAST}


def _plain(value: Any) -> Any:
    """A JSON-ready value: tensors (anything with `.item()`) to numbers, NaN/inf to None (JSON has no NaN)."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(
    run_dir: Path,
    metrics: Mapping[str, Any],
    judged_metric: str,
    judged_mode: str,
    file_name: str = METRICS_FILE,
    **extra: Any,
) -> Path:
    """metrics.json (or genlab-eval's eval.json): a flat object of metrics plus the name and direction of the
    judged metric."""
    content = {name: _plain(value) for name, value in sorted(metrics.items())}
    content.update(judged_metric=judged_metric, judged_mode=judged_mode, **{k: _plain(v) for k, v in extra.items()})
    path = run_dir / file_name
    write_json_atomically(path, content)
    return path


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file of the run folder, or None when the run has not written it (yet); a file that is not a JSON
    object (empty, cut off, edited by hand) is one line naming it."""
    if not path.is_file():
        return None
    try:
        content = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise ConfigError(f"{path} is not readable JSON ({one_line(str(exc))}); restore it or remove it") from exc
    check(isinstance(content, dict), f"{path} holds {type(content).__name__}, not a JSON object; restore or remove it")
    return content


# -- a run's config and checkpoints ------------------------------------------------------------------------------


def check_run_dir(path: str | Path, name: str = "run") -> Path:
    """The run folder as an absolute path, or one line saying why `path` is not one."""
    run_dir = Path(path).expanduser()
    if not (run_dir / CONFIG_FILE).is_file():
        reason = "does not exist" if not run_dir.exists() else f"has no {CONFIG_FILE}"
        raise ConfigError(
            f"{name}={path} is not a run folder ({reason}); give a folder made by genlab-train, "
            f"e.g. outputs/train/runs/<date>_<time>_<id>"
        )
    return run_dir.resolve()


def read_config(path: Path) -> DictConfig:
    """A saved config (YAML); an empty or unreadable file is one line naming it."""
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:  # yaml's and OmegaConf's parse errors
        raise ConfigError(f"{path} is not a readable config ({one_line(str(exc))[:200]}); restore it") from exc
    check(isinstance(cfg, DictConfig) and len(cfg) > 0, f"{path} is empty or not a mapping of settings; restore it")
    return cfg


def run_config(run_dir: Path) -> DictConfig:
    """The run's own saved config, its output folder pointed at `run_dir` (it was Hydra's runtime folder).

    Only configs whose every `_target_` genlab trusts are returned (`genlab.trust`): a run folder is data, not code.
    """
    import genlab.config  # noqa: F401 - the resolvers a saved config uses (`${run_folder:...}`, `${judged:...}`)

    path = run_dir / CONFIG_FILE
    cfg = read_config(path)
    check_trusted(cfg, path)
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


def checkpoint_dir(cfg: DictConfig, run_dir: Path) -> Path:
    """Where the run's ModelCheckpoint wrote (callbacks.model_checkpoint.dirpath, `checkpoints/` by default)."""
    dirpath = OmegaConf.select(cfg, "callbacks.model_checkpoint.dirpath", default=None)
    return Path(dirpath) if dirpath else run_dir / CHECKPOINTS


def last_checkpoint(cfg: DictConfig, run_dir: Path) -> Path:
    return checkpoint_dir(cfg, run_dir) / f"{LAST}.ckpt"


def find_checkpoint(run_dir: Path, cfg: DictConfig, which: str) -> Path:
    """`best` (the one metrics.json describes; before the run wrote it, the newest best*.ckpt), `last`, or a path
    (relative to the working directory or to the run folder)."""
    folder = checkpoint_dir(cfg, run_dir)
    if which == LAST:
        path = last_checkpoint(cfg, run_dir)
        check(path.is_file(), f"ckpt=last: {path} does not exist; the run saved no checkpoint yet")
        return path
    if which == "best":
        described = (read_json(run_dir / METRICS_FILE) or {}).get("checkpoint")
        if described:
            return run_dir / described
        best = sorted(folder.glob("best*.ckpt"), key=lambda p: p.stat().st_mtime)
        check(bool(best), f"ckpt=best: no best checkpoint in {folder}; try ckpt=last or ckpt=PATH")
        return best[-1]
    path = Path(which).expanduser()
    return path if path.is_absolute() or path.exists() else run_dir / path


# -- never write a new run over an old one --------------------------------------------------------------------------


def holds_a_run(folder: Path) -> bool:
    """Whether `folder` already holds a run (or a sweep's runs) that a new one would overwrite."""
    markers = [MANIFEST_FILE, str(CONFIG_FILE), METRICS_FILE, CHECKPOINTS, "multirun.yaml"]
    return any((folder / marker).exists() for marker in markers) or any(folder.glob(f"*/{MANIFEST_FILE}"))


def process_rank() -> int:
    """This process's rank in a job launched by hand or by Lightning (0 when it is the only one)."""
    for variable in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(variable, "").isdigit():
            return int(os.environ[variable])
    return 0


class RefuseUsedFolders(Callback):
    """A new run (`hydra.run.dir=`) or sweep (`hydra.sweep.dir=`) pointed at a folder that already holds one stops
    before Hydra writes anything there: the old run stays byte for byte as it was. `resume=` continues a run in its
    own folder instead. Other ranks of a job launched by hand join the folder rank 0 made."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") or process_rank() != 0:
            return
        self._refuse(Path(config.hydra.run.dir), "hydra.run.dir", "continue it with resume=")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._refuse(Path(config.hydra.sweep.dir), "hydra.sweep.dir", "compare it with genlab-compare")

    @staticmethod
    def _refuse(folder: Path, key: str, instead: str) -> None:
        # Hydra turns an exception raised by a callback into a warning and goes on: exit here instead.
        with exit_on_user_error("genlab-train"):
            check(
                not holds_a_run(folder),
                f"{key}={folder} already holds a run; a new one would overwrite it: {instead}, or pick another folder",
            )
