"""One Optuna study run as a Hydra sweep: ask a batch of trials, launch them as jobs, tell each job's outcome.

The study lives in storage (by default `optuna.db` in the sweep folder), so the same command on the same folder
continues it: finished trials stay, a trial left running by a sweep that died is told failed and asked again with its
parameters, `n_trials` counts the whole study, and each job's folder is its trial's number, so none is reused.
A job's outcome is read from its run folder's manifest (completed, pruned, failed), whatever launcher ran it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError
from genlab.run.layout import STUDY_FILE
from genlab.sweeper.space import as_override, search_space
from genlab.sweeps import job_record

log = logging.getLogger(__name__)

#: A launcher's `launch(job_overrides, initial_job_idx)`: one job per overrides list, numbered from the index.
Launch = Callable[[list[list[str]], int], Sequence[Any]]


def default_storage(sweep_dir: Path) -> str:
    return f"sqlite:///{(sweep_dir / STUDY_FILE).resolve()}"


@dataclass
class StudySettings:
    """`hydra.sweeper`'s settings (conf/hydra/sweeper/optuna.yaml documents each)."""

    study_name: str
    storage: str | None
    direction: str
    n_trials: int
    n_jobs: int
    sampler: Any
    pruner: Any
    params: dict[str, str] | None


def open_study(settings: StudySettings, sweep_dir: Path) -> Any:
    import optuna

    if settings.direction not in ("minimize", "maximize"):
        raise ConfigError(f"hydra.sweeper.direction={settings.direction!r}: give minimize or maximize")
    if settings.n_trials < 1 or settings.n_jobs < 1:
        raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = optuna.create_study(
        study_name=settings.study_name,
        storage=settings.storage or default_storage(sweep_dir),
        sampler=settings.sampler,
        pruner=settings.pruner,
        direction=settings.direction,
        load_if_exists=True,
    )
    if study.direction.name.lower() != settings.direction:
        raise ConfigError(
            f"the study {settings.study_name!r} in {settings.storage or sweep_dir / STUDY_FILE} was made to "
            f"{study.direction.name.lower()}, not to {settings.direction}; give another hydra.sweeper.study_name"
        )
    return study


def requeue_stale_trials(study: Any) -> int:
    """Trials still marked running when this sweep starts belong to a sweep that died: told failed, asked again."""
    from optuna.trial import TrialState

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        study.tell(trial.number, state=TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"requeued_from": trial.number})
        log.warning("trial %d was left running by an earlier sweep: told failed, asked again", trial.number)
    return len(stale)


def finished(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


def trial_overrides(trial: Any, fixed: list[str], storage: str, study_name: str) -> list[str]:
    """The job's overrides: the fixed ones, the trial's parameters, and where the trial lives (for pruning)."""
    return [
        *fixed,
        *(as_override(key, value) for key, value in trial.params.items()),
        as_override("optuna.storage", storage),
        as_override("optuna.study", study_name),
        f"optuna.trial={trial.number}",
    ]


def outcome(job_return: Any) -> tuple[str, float | None]:
    """(state, value) of one finished job: from its manifest, since a failed or pruned run returns no metric."""
    status = job_record(Path(job_return.hydra_cfg.hydra.runtime.output_dir))["status"]
    if status == "pruned":
        return "pruned", None
    if status != "completed":
        return "fail", None
    try:
        value = job_return.return_value
    except Exception:  # the job raised past genlab's own handling
        return "fail", None
    return ("complete", float(value)) if value is not None and math.isfinite(value) else ("fail", None)


def exhausted(study: Any) -> bool:
    """Whether the sampler has nothing left to try (the grid sampler, once every point was tried)."""
    is_exhausted = getattr(study.sampler, "is_exhausted", None)
    return bool(is_exhausted and is_exhausted(study))


def tell(study: Any, trial: Any, job_return: Any) -> None:
    from optuna.trial import TrialState

    state, value = outcome(job_return)
    try:
        if state == "complete":
            study.tell(trial, value)
        else:
            study.tell(trial, state=TrialState.PRUNED if state == "pruned" else TrialState.FAIL)
    except RuntimeError:
        # An exhausted grid sampler calls study.stop(), which only works inside study.optimize; the trial is told.
        if not exhausted(study):
            raise


def consecutive(trials: list[Any]) -> list[list[Any]]:
    """Runs of trials with consecutive numbers (a launcher numbers a batch's jobs from its first index)."""
    groups: list[list[Any]] = []
    for trial in trials:
        if groups and groups[-1][-1].number + 1 == trial.number:
            groups[-1].append(trial)
        else:
            groups.append([trial])
    return groups


def run_study(settings: StudySettings, sweep_dir: Path, arguments: list[str], launch: Launch) -> Any:
    """Ask, launch and tell until the study holds `n_trials` finished trials; returns the study."""
    study = open_study(settings, sweep_dir)
    space, fixed = search_space(settings.params, arguments)
    if not space:
        raise ConfigError("the Optuna sweep has nothing to search: give hydra.sweeper.params or a sweep override")
    storage = settings.storage or default_storage(sweep_dir)
    requeue_stale_trials(study)
    while (left := settings.n_trials - finished(study)) > 0 and not exhausted(study):
        trials = [study.ask(space) for _ in range(min(settings.n_jobs, left))]
        for group in consecutive(trials):
            overrides = [trial_overrides(t, fixed, storage, settings.study_name) for t in group]
            for trial, job_return in zip(group, launch(overrides, group[0].number), strict=True):
                tell(study, trial, job_return)
    return study


def best_summary(study: Any) -> dict[str, Any]:
    """What `optimization_results.yaml` holds: the best trial's parameters and value, and the trials' states."""
    from optuna.trial import TrialState

    states = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    completed = states.get("complete", 0)
    best = {"best_params": study.best_params, "best_value": study.best_value} if completed else {}
    return {"name": "optuna", "study_name": study.study_name, **best, "trials": states}
