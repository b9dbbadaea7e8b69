"""genlab's Optuna sweeper end to end (in this process, Hydra's basic launcher): the study in the sweep folder's
SQLite file, failed and pruned trials told as such, a sweep that died continued by the same command."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from test_sweeps import TINY_VAE, Sweep

from genlab.sweeper.space import as_override, search_space
from genlab.upstream import parse_hydra_overrides

#: A validation after each of the two epochs, so that a pruner has steps to compare.
EPOCHS = ["trainer.check_val_every_n_epoch=1"]
VAE_SEARCH = Path(__file__).resolve().parents[1] / "conf" / "hparams_search" / "vae_optuna.yaml"
GOOD = {"model.latent_dim": 8, "model.beta": 1.0, "model.optimizer.lr": 3e-3}
BAD = {**GOOD, "model.optimizer.lr": 1e-4}


def study_of(sweep_dir: Path, name: str = "vae") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def states(study: optuna.Study) -> list[str]:
    return [trial.state.name for trial in study.get_trials()]


def test_the_search_space_reads_hydras_sweep_syntax() -> None:
    space, fixed = search_space(
        {"a": "choice(8, 16)", "b": "tag(log, interval(1e-4, 1e-2))", "c": "int(interval(1, 4))", "d": "range(1, 4)"},
        ["a=1,2", "seed=3", "data=digits"],
    )
    assert space["a"].choices == (1, 2)  # the command line wins over params
    assert (space["b"].low, space["b"].high, space["b"].log) == (1e-4, 1e-2, True)
    assert (space["c"].low, space["c"].high, space["c"].step) == (1, 4, 1)
    assert space["d"].choices == (1, 2, 3)
    assert fixed == ["seed=3", "data=digits"]
    for value in (3, 0.001, True, "adam", "sqlite:////tmp/a b/optuna.db", "it's"):
        (override,) = parse_hydra_overrides([as_override("k", value)])
        assert override.value() == value


def test_failed_trials_are_told_failed_and_the_study_goes_on(tmp_path: Path) -> None:
    # Every value of beta once, in an order drawn from the seed: beta=-1 is refused (a ConfigError), beta=1 runs.
    grid = ["hydra/sweeper/sampler=grid", "hydra.sweeper.sampler.search_space={model.beta:[-1.0,1.0]}"]
    sweep = Sweep(tmp_path, "hparams_search=vae_optuna", "hydra.sweeper.params=null", *grid,
                  "hydra.sweeper.n_trials=2", "model.beta=choice(-1.0,1.0)", *TINY_VAE)  # fmt: skip
    assert len(sweep.jobs) == 2, sweep.process.stderr[-3000:]
    manifests = [sweep.json(job, "manifest.json")["status"] for job in sweep.jobs]
    told = {"failed": "FAIL", "completed": "COMPLETE"}
    assert states(study_of(sweep.dir)) == [told[status] for status in manifests]
    assert sorted(states(study_of(sweep.dir))) == ["COMPLETE", "FAIL"]
    results = yaml.safe_load((sweep.dir / "optimization_results.yaml").read_text())
    completed = [sweep.json(job, "metrics.json")["val/elbo"] for job in sweep.jobs if (job / "metrics.json").is_file()]
    assert results["best_value"] == pytest.approx(min(completed))
    assert results["best_params"]["model.beta"] == 1.0
    assert sweep.process.returncode == 1  # a job failed (hydra.callbacks.sweep_summary.fail_on_job_error)


def test_a_study_that_died_is_continued_pruned_and_kept(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "study"
    sweep_dir.mkdir()
    study = optuna.create_study(study_name="vae", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    study.enqueue_trial(BAD)
    space, _ = search_space(yaml.safe_load(VAE_SEARCH.read_text())["hydra"]["sweeper"]["params"], [])
    study.ask(space)  # trial 0: asked by a sweep that died before telling it
    study.enqueue_trial(GOOD)
    study.enqueue_trial(BAD)
    command = ["hparams_search=vae_optuna", f"hydra.sweep.dir={sweep_dir}", "hydra/sweeper/pruner=median",
               "hydra.sweeper.pruner.n_startup_trials=1", *TINY_VAE, *EPOCHS]  # fmt: skip

    first = Sweep(tmp_path, *command, "hydra.sweeper.n_trials=4")
    assert first.process.returncode == 0, first.process.stderr[-3000:]
    study = study_of(sweep_dir)
    # Trial 0 was told failed and asked again (as trial 3); 1 (good) completed; 2 and 3 (lr 30x lower) were pruned.
    assert states(study) == ["FAIL", "COMPLETE", "PRUNED", "PRUNED"]
    assert study.trials[3].params == BAD and study.trials[3].user_attrs["requeued_from"] == 0
    assert [job.name for job in first.jobs] == ["1", "2", "3"]  # each job's folder is its trial's number
    pruned = first.json(first.jobs[1], "manifest.json")
    assert pruned["status"] == "pruned" and "pruned by the study's pruner" in pruned["error"]
    assert not (first.jobs[1] / "metrics.json").exists()
    assert "1 of 3 jobs completed, 2 pruned" in first.process.stdout
    kept = {job.name: (job / "manifest.json").read_bytes() for job in first.jobs}

    again = Sweep(tmp_path, *command, "hydra.sweeper.n_trials=5")  # the same command: one more trial
    assert again.process.returncode == 0, again.process.stderr[-3000:]
    assert len(study_of(sweep_dir).trials) == 5
    assert [job.name for job in again.jobs] == ["1", "2", "3", "4"]
    assert {name: (sweep_dir / name / "manifest.json").read_bytes() for name in kept} == kept
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["jobs"] == 4 and summary["failed"] == 0


def test_a_study_of_two_objectives_tells_each_trial_both_metrics(tmp_path: Path) -> None:
    objectives = ["hydra.sweeper.metrics=[val/elbo,val/kl]", "hydra.sweeper.directions=[minimize,maximize]"]
    sweep = Sweep(tmp_path, "hparams_search=vae_optuna", "hydra/sweeper/sampler=nsgaii", *objectives,
                  "hydra.sweeper.n_trials=2", *TINY_VAE)  # fmt: skip
    assert sweep.process.returncode == 0, sweep.process.stderr[-3000:]
    study = study_of(sweep.dir)
    assert [direction.name for direction in study.directions] == ["MINIMIZE", "MAXIMIZE"]
    for trial, job in zip(study.trials, sweep.jobs, strict=True):
        metrics = sweep.json(job, "metrics.json")
        assert trial.values == pytest.approx([metrics["val/elbo"], metrics["val/kl"]])
        assert trial.intermediate_values == {}  # Optuna neither reports nor prunes a study of several objectives
    front = yaml.safe_load((sweep.dir / "optimization_results.yaml").read_text())["best_trials"]
    assert sorted(trial["number"] for trial in front) == sorted(trial.number for trial in study.best_trials)
    assert all(len(trial["values"]) == 2 for trial in front)


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        (
            "hydra.sweeper.direction=sideways",
            "hydra.sweeper.direction: 'sideways' is not a direction: give minimize or maximize",
        ),
        (
            "hydra.sweeper.params=null",
            "the Optuna sweep has nothing to search: give hydra.sweeper.params or a sweep override",
        ),
        (
            "hydra.sweeper.metrics=[val/elbo,val/kl]",
            "hydra.sweeper.metrics=['val/elbo', 'val/kl'] needs one direction each in hydra.sweeper.directions "
            "(got [])",
        ),
        (
            "hydra.sweeper.metrics=[val/elbo,val/kl] hydra.sweeper.directions=[minimize,up]",
            "hydra.sweeper.directions: 'up' is not a direction: give minimize or maximize",
        ),
        (
            "hydra.sweeper.metrics=[val/elbo,val/kl] hydra.sweeper.directions=[minimize,maximize] "
            "hydra/sweeper/pruner=median",
            "Optuna prunes studies of one objective only: drop hydra/sweeper/pruner or the metrics",
        ),
    ],
)
def test_bad_sweeper_settings_are_one_line(tmp_path: Path, setting: str, message: str) -> None:
    sweep = Sweep(tmp_path, "hparams_search=vae_optuna", *setting.split(), *TINY_VAE)
    assert sweep.process.returncode == 2
    assert sweep.process.stderr.strip().splitlines()[-1] == f"genlab-train: error: {message}"
    assert sweep.jobs == []
