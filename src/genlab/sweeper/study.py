"""One Optuna study run as a Hydra sweep: ask a batch of trials, launch them as jobs, tell each job's outcome.

The study lives in storage (by default `optuna.db` in the sweep folder), so the same command on the same folder
continues it: finished trials stay, a trial left running by a sweep that died is told failed and asked again with its
parameters, `n_trials` counts the whole study, and each job's folder is its trial's number, so none is reused.
A job's outcome is read from its run folder's manifest (completed, pruned, failed), whatever launcher ran it.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError
from genlab.run.layout import METRICS_FILE, STUDY_FILE
from genlab.run.records import read_json
from genlab.sweeper.space import as_override, search_space
from genlab.sweeps import job_record

log = logging.getLogger(__name__)

#: A launcher's `launch(job_overrides, initial_job_idx)`: one job per overrides list, numbered from the index.
Launch = Callable[[list[list[str]], int], Sequence[Any]]


#: The trial's user attribute naming the sweep folder that runs it.
SWEEP_ATTR = "sweep_dir"


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
    #: Several objectives (NSGA-II's kind of study): the metrics of each job's metrics.json, one direction each.
    metrics: list[str] | None = None
    directions: list[str] | None = None

    def objectives(self) -> list[str]:
        """The study's directions, checked: one per metric when `metrics` is given, else `direction`."""
        directions = [self.direction] if self.metrics is None else list(self.directions or [])
        if self.metrics is not None and (not self.metrics or len(directions) != len(self.metrics)):
            raise ConfigError(
                f"hydra.sweeper.metrics={list(self.metrics)} needs one direction each in hydra.sweeper.directions "
                f"(got {directions})"
            )
        for direction in directions:
            if direction not in ("minimize", "maximize"):
                key = "directions" if self.metrics is not None else "direction"
                raise ConfigError(f"hydra.sweeper.{key}: {direction!r} is not a direction: give minimize or maximize")
        return directions


def open_study(settings: StudySettings, sweep_dir: Path) -> Any:
    import optuna

    directions = settings.objectives()
    if settings.n_trials < 1 or settings.n_jobs < 1:
        raise ConfigError("hydra.sweeper.n_trials and hydra.sweeper.n_jobs must be at least 1")
    if len(directions) > 1 and not isinstance(settings.pruner, optuna.pruners.NopPruner):
        raise ConfigError("Optuna prunes studies of one objective only: drop hydra/sweeper/pruner or the metrics")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    study = create_study_racing(
        study_name=settings.study_name,
        storage=settings.storage or default_storage(sweep_dir),
        sampler=settings.sampler,
        pruner=settings.pruner,
        directions=directions,
    )
    made = [direction.name.lower() for direction in study.directions]
    if made != directions:
        raise ConfigError(
            f"the study {settings.study_name!r} in {settings.storage or sweep_dir / STUDY_FILE} was made to "
            f"{' and '.join(made)}, not to {' and '.join(directions)}; give another hydra.sweeper.study_name"
        )
    return study


#: How often a sweep tries to open its study when another process is creating the same new database's tables.
OPEN_ATTEMPTS = 5


def create_study_racing(**study: Any) -> Any:
    """`optuna.create_study`, for sweeps that start at once on one new database: both create Optuna's tables, and
    the one that loses that race fails on a table or type that already exists; it finds them made when it tries
    again."""
    import optuna
    import sqlalchemy.exc

    for attempt in range(1, OPEN_ATTEMPTS):
        try:
            return optuna.create_study(**study, load_if_exists=True)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as error:
            log.info("the study's storage is being made by another process (%s): trying again", type(error).__name__)
            time.sleep(0.2 * attempt)
    return optuna.create_study(**study, load_if_exists=True)


#: A trial without a sweep folder yet, in a shared storage, is another sweep's just asked (it names its folder at
#: once) for this long; after that, a sweep that died between asking and naming.
UNNAMED_GRACE = datetime.timedelta(minutes=1)


def requeue_stale_trials(study: Any, sweep_dir: Path, shared: bool) -> int:
    """Trials of this sweep folder still marked running when the sweep starts belong to a sweep that died there: told
    failed, asked again. Running trials of other folders are other sweeps' (on other machines, sharing the study's
    `shared` storage): left alone, and so are those of a shared storage without a folder for UNNAMED_GRACE (another
    sweep has just asked them: taking them for stale failed two sweeps started at once)."""
    from optuna.trial import TrialState

    mine = str(sweep_dir.resolve())
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    now = datetime.datetime.now()

    def stale_here(trial: Any) -> bool:
        if SWEEP_ATTR in trial.user_attrs:
            return trial.user_attrs[SWEEP_ATTR] == mine
        return not shared or trial.datetime_start is None or now - trial.datetime_start > UNNAMED_GRACE

    stale = [trial for trial in running if stale_here(trial)]
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


def outcome(job_return: Any, metrics: list[str] | None = None) -> tuple[str, float | list[float] | None]:
    """(state, value) of one finished job: from its manifest, since a failed or pruned run returns no metric; with
    several `metrics`, their values in the job's metrics.json."""
    job_dir = Path(job_return.hydra_cfg.hydra.runtime.output_dir)
    status = job_record(job_dir)["status"]
    if status == "pruned":
        return "pruned", None
    if status != "completed":
        return "fail", None
    if metrics is not None:
        return objective_values(job_dir, metrics)
    try:
        value = job_return.return_value
    except Exception:  # the job raised past genlab's own handling
        return "fail", None
    return ("complete", float(value)) if value is not None and math.isfinite(value) else ("fail", None)


def objective_values(job_dir: Path, metrics: list[str]) -> tuple[str, list[float] | None]:
    """A completed job's values of the study's metrics; a metric it lacks (or not finite) fails the trial."""
    written = read_json(job_dir / METRICS_FILE) or {}
    values = [written.get(metric) for metric in metrics]
    missing = [
        m for m, v in zip(metrics, values, strict=True) if not isinstance(v, (int, float)) or not math.isfinite(v)
    ]
    if missing:
        log.warning("job %s has no finite %s in its metrics.json: its trial is told failed", job_dir.name, missing[0])
        return "fail", None
    return "complete", [float(value) for value in values]


def exhausted(study: Any) -> bool:
    """Whether the sampler has nothing left to try (the grid sampler, once every point was tried)."""
    is_exhausted = getattr(study.sampler, "is_exhausted", None)
    return bool(is_exhausted and is_exhausted(study))


def tell(study: Any, trial: Any, job_return: Any, metrics: list[str] | None = None) -> None:
    from optuna.trial import TrialState

    state, value = outcome(job_return, metrics)
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
    requeue_stale_trials(study, sweep_dir, shared=settings.storage is not None)
    while (left := settings.n_trials - finished(study)) > 0 and not exhausted(study):
        trials = [study.ask(space) for _ in range(min(settings.n_jobs, left))]
        for trial in trials:
            trial.set_user_attr(SWEEP_ATTR, str(sweep_dir.resolve()))
        for group in consecutive(trials):
            overrides = [trial_overrides(t, fixed, storage, settings.study_name) for t in group]
            for trial, job_return in zip(group, launch(overrides, group[0].number), strict=True):
                tell(study, trial, job_return, settings.metrics)
    return study


def best_summary(study: Any) -> dict[str, Any]:
    """What `optimization_results.yaml` holds: the best trial's parameters and value, and the trials' states."""
    from optuna.trial import TrialState

    states = {state.name.lower(): len(study.get_trials(deepcopy=False, states=(state,))) for state in TrialState}
    completed = states.get("complete", 0)
    if len(study.directions) > 1:  # no one best trial: the Pareto front
        front = [{"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials]
        best = {"best_trials": front} if completed else {}
    else:
        best = {"best_params": study.best_params, "best_value": study.best_value} if completed else {}
    return {"name": "optuna", "study_name": study.study_name, **best, "trials": states}
