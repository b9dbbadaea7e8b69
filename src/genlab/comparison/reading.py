"""Run folders as genlab-compare reads them: config (as saved), overrides, status, metrics; or genlab-eval records."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genlab.errors import DataError, GenlabError, one_line
from genlab.run.config import read_config
from genlab.run.layout import CONFIG_FILE, EVALS_DIR, HYDRA_DIR, MANIFEST_FILE, METRICS_FILE, MULTIRUN_FILE
from genlab.run.records import read_json
from genlab.sweeps import parse_overrides

# Not what a configuration is: the seed is what runs of one configuration differ by; folders differ in every run.
IGNORED_KEYS = {"seed", "resume", "hydra", "paths"}
#: Config-group choices that other choices imply (debug=... picks the debug sizes of the chosen model and metrics).
IMPLIED_CHOICES = ("debug/sizes/",)


MISSING = "—"
log = logging.getLogger(__name__)


def _ignored(key: str) -> bool:
    return re.split(r"[./]", key, maxsplit=1)[0] in IGNORED_KEYS or key.startswith(IMPLIED_CHOICES)


def _flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: str(node) if isinstance(node, list) else node}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _metrics_of(content: dict[str, Any]) -> dict[str, float]:
    """The numbers of a metrics.json or eval record (`split/name` keys)."""
    return {k: float(v) for k, v in content.items() if "/" in k and _number(v)}


@dataclass
class RunRecord:
    """One run folder as compare reads it: its config (unresolved, as saved), overrides, status and metrics."""

    path: Path
    status: str
    error: str | None
    model: str
    config: dict[str, Any]  # flattened leaves, group choices and overrides: every candidate parameter
    primary: set[str]  # the keys a user chose: config groups and command-line overrides
    metrics: dict[str, float]
    judged_metric: str | None
    judged_mode: str | None

    @classmethod
    def read(cls, path: Path) -> RunRecord:
        hydra_file = path / HYDRA_DIR / "hydra.yaml"
        hydra = OmegaConf.to_container(read_config(hydra_file)).get("hydra", {}) if hydra_file.is_file() else {}
        config = _flatten(OmegaConf.to_container(read_config(path / CONFIG_FILE), resolve=False))
        choices = hydra.get("runtime", {}).get("choices", {})
        overrides = parse_overrides(hydra.get("overrides", {}).get("task", []))
        config.update(choices)
        config.update(overrides)
        manifest = read_json(path / MANIFEST_FILE) or {}
        content = read_json(path / METRICS_FILE) or {}
        status = manifest.get("status", "unknown")
        if status == "completed" and not content:
            status = "no metrics.json"
        return cls(
            path=path,
            status=status,
            error=manifest.get("error"),
            model=str(config.get("model._target_", "?")).rsplit(".", 1)[-1],
            config={k: v for k, v in config.items() if not _ignored(k)},
            primary={k for k in (*choices, *overrides) if not _ignored(k)},
            metrics=_metrics_of(content),
            judged_metric=content.get("judged_metric"),
            judged_mode=content.get("judged_mode"),
        )

    @classmethod
    def evaluations(cls, path: Path) -> list[RunRecord]:
        """The genlab-eval records of the run folder `path` (`RUN/evals/*.json`), each as a run of its own: the
        run's config with the evaluation's overrides applied (so they are parameters that can vary), and the
        evaluation's metrics."""
        run = cls.read(path)
        found = []
        for record in sorted((path / EVALS_DIR).glob("*.json")):
            content = read_json(record) or {}
            overrides = parse_overrides(content.get("overrides", []))
            overrides = {k: v for k, v in overrides.items() if not _ignored(k)}
            found.append(
                replace(
                    run,
                    path=record,
                    status="completed",
                    error=None,
                    config={**run.config, **overrides},
                    primary=run.primary | set(overrides),
                    metrics=_metrics_of(content),
                    judged_metric=content.get("judged_metric"),
                    judged_mode=content.get("judged_mode"),
                )
            )
        return found

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    @property
    def loss_kind(self) -> str | None:
        """What a language model's val/loss and test/loss measure, where models differ: the GPT's likelihood, a
        masked LM's bound on it (MDLM) or its masked tokens' cross-entropy (MLM, not a likelihood)."""
        if self.model == "TransformerLM":
            return "the negative log-likelihood (TransformerLM)"
        if self.model == "MaskedLM":
            objective = self.config.get("model.objective", "mdlm")
            return "an upper bound on it (MDLM)" if objective == "mdlm" else "no likelihood (MLM: masked tokens only)"
        return None


@dataclass
class Skipped:
    """A run folder that could not be read (damaged, empty or half-written), and why."""

    path: Path
    reason: str


def read_runs(run_dirs: Iterable[Path], evaluations: bool = False) -> tuple[list[RunRecord], list[Skipped]]:
    """The readable runs (or their genlab-eval records) and the others, each skipped with one warning line: one
    broken file among a hundred runs costs that run, not the comparison."""
    runs: list[RunRecord] = []
    skipped: list[Skipped] = []
    for path in run_dirs:
        try:
            runs += RunRecord.evaluations(path) if evaluations else [RunRecord.read(path)]
        except (GenlabError, OSError, OmegaConfBaseException, ValueError, AttributeError) as exc:
            skipped.append(Skipped(path, one_line(str(exc))[:300] or type(exc).__name__))
            log.warning("skipped the run %s: %s", path, skipped[-1].reason)
    return runs, skipped


def empty_jobs(paths: Iterable[Path]) -> list[Skipped]:
    """The job folders of the multirun folders in `paths` that hold no run (a job that never started, or a copy
    that lost its files), each with one warning line."""
    found = []
    for path in paths:
        if not (path / MULTIRUN_FILE).is_file():
            continue
        for job in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (job / CONFIG_FILE).is_file() and not any(job.glob(f"**/{CONFIG_FILE}")):
                found.append(Skipped(job, f"no {CONFIG_FILE}: an empty or half-written job folder"))
                log.warning("skipped the run %s: %s", job, found[-1].reason)
    return found


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Run folders (those holding `.hydra/config.yaml`) at or under each path."""
    found: list[Path] = []
    for path in paths:
        if not path.exists():
            raise DataError(f"{path} does not exist; give a multirun folder or run folders")
        found += sorted(p.parent.parent for p in path.glob("**/.hydra/config.yaml"))
    return list(dict.fromkeys(found))
