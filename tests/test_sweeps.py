"""Sweeps end to end: multirun with joblib, submitit and DDP, failed jobs, Optuna, the HPARAMS tab, genlab-compare."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import statistics
from pathlib import Path

import nbclient
import nbformat
import pytest
import torch
import yaml
from conftest import QUIET_TRAIN, TINY_LM_NET, train_env
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from inprocess import Result, call_entrypoint, run_console_script
from omegaconf import read_write
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from genlab.comparison.plots import learning_curve
from genlab.comparison.tables import load_sweep

# Two epochs of two batches, no sample-quality metrics or pictures: every job takes seconds.
TINY = [
    "debug=limit",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "metrics=none",
    "callbacks.samples=null",
    *QUIET_TRAIN,
]
TINY_VAE = [*TINY, "model.eval_iwae_k=2"]


class Sweep:
    """The result of one `genlab-train -m ...` and the sweep folder it made.

    In this process with Hydra's basic launcher; `process=True` runs the console script, for launchers that start
    processes of their own (joblib, submitit) and DDP, whose workers re-run the command.
    """

    def __init__(self, root: Path, *overrides: str, process: bool = False, env: dict[str, str] | None = None) -> None:
        self.log_dir = root / "outputs"
        run = run_console_script if process else call_entrypoint
        env = {**train_env(self.log_dir), **(env or {})}
        self.process = run("genlab-train", ["-m", *overrides], cwd=root, env=env)
        given = [o.split("=", 1)[1] for o in overrides if o.startswith("hydra.sweep.dir=")]
        sweeps = [Path(given[0])] if given else list((self.log_dir / "train" / "multiruns").glob("*"))
        assert len(sweeps) == 1, f"expected one sweep folder, got {sweeps}\n{self.process.stderr[-3000:]}"
        self.dir = sweeps[0]
        self.jobs = sorted((p for p in self.dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))

    def json(self, job: Path, name: str) -> dict:
        return json.loads((job / name).read_text())

    @property
    def summary(self) -> dict:
        return json.loads((self.dir / "sweep_summary.json").read_text())


def compare(*args: str | Path) -> Result:
    return call_entrypoint("genlab-compare", list(map(str, args)), cwd=Path.cwd(), env=dict(os.environ))


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Sweep:
    """Two latent sizes x two seeds, two jobs at a time with the joblib launcher."""
    sweep = Sweep(
        tmp_path_factory.mktemp("grid"),
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "model.latent_dim=4,8",
        "seed=1,2",
        *TINY_VAE,
        process=True,
    )
    assert sweep.process.returncode == 0, sweep.process.stderr[-4000:]
    return sweep


def test_grid_sweep_with_joblib_gives_one_folder_per_job(grid: Sweep) -> None:
    assert [job.name for job in grid.jobs] == ["0", "1", "2", "3"]
    seen = set()
    for job in grid.jobs:
        manifest = grid.json(job, "manifest.json")
        assert manifest["status"] == "completed"
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        seen.add((config["model"]["latent_dim"], config["seed"]))
        assert manifest["seed"] == config["seed"]
    assert seen == {(4, 1), (4, 2), (8, 1), (8, 2)}
    assert grid.summary["jobs"] == 4 and grid.summary["failed"] == 0
    assert not (grid.log_dir / "train" / "runs").exists(), "a job left a run folder outside the sweep"


def test_compare_averages_each_configuration_over_seeds(grid: Sweep, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = compare(grid.dir, "--plot", "--out", out)
    assert result.returncode == 0, result.stderr
    with (out / "comparison.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [row["model.latent_dim"] for row in rows] == ["4", "8"]
    values: dict[str, list[float]] = {"4": [], "8": []}
    for job in grid.jobs:
        latent = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["model"]["latent_dim"]
        values[str(latent)].append(grid.json(job, "metrics.json")["val/elbo"])
    for row in rows:
        assert row["n"] == "2" and row["failed"] == "0"
        assert float(row["val/elbo mean"]) == pytest.approx(statistics.fmean(values[row["model.latent_dim"]]))
        assert float(row["val/elbo std"]) == pytest.approx(statistics.stdev(values[row["model.latent_dim"]]))
    best = min(rows, key=lambda row: float(row["val/elbo mean"]))
    assert [row["best"] for row in rows] == [str(row is best) for row in rows]
    markdown = (out / "comparison.md").read_text()
    assert "| best | model.latent_dim | n | failed | val/elbo |" in markdown
    assert "✓" in markdown and "best by val/elbo (lower is better)" in result.stdout
    assert (out / "curves_val_elbo.png").stat().st_size > 0
    assert (out / "val_elbo_vs_model.latent_dim.png").stat().st_size > 0


def test_learning_curves_hold_the_training_points_only(grid: Sweep) -> None:
    job = grid.jobs[0]
    curve = learning_curve(job, "val/elbo")
    # One validation per epoch (2 epochs); the best checkpoint's evaluation after training is not a curve point.
    assert len(curve) == 2 and sorted(curve) == list(curve)
    assert grid.json(job, "metrics.json")["val/elbo"] == pytest.approx(min(curve.values()), rel=1e-6)


def test_hparams_tab_shows_each_runs_overrides_against_its_metrics(grid: Sweep) -> None:
    events = EventAccumulator(str(grid.jobs[3] / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.latent_dim"].number_value == 8
    assert start.hparams["seed"].number_value == 2
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert {"val/elbo", "test/elbo"} <= {info.name.tag for info in experiment.metric_infos}


def test_a_failed_job_does_not_stop_the_sweep(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "model.beta=-1,0.5,1", *TINY_VAE)
    # The sweep ran every job, said which failed and why, and exits 1 for it.
    assert sweep.process.returncode == 1, sweep.process.stderr[-3000:]
    assert "genlab-train: job 0 failed" in sweep.process.stderr
    assert "model.beta=-1 is not allowed: expected a number >= 0" in sweep.process.stderr
    statuses = [sweep.json(job, "manifest.json")["status"] for job in sweep.jobs]
    assert statuses == ["failed", "completed", "completed"]
    assert all((job / "metrics.json").is_file() for job in sweep.jobs[1:])
    summary = sweep.summary
    assert summary["failed"] == 1 and summary["jobs"] == 3
    assert "ConfigError: model.beta=-1 is not allowed" in summary["runs"][0]["error"]
    assert "2 of 3 jobs completed" in sweep.process.stdout

    result = compare(sweep.dir)
    assert result.returncode == 0, result.stderr
    table = load_sweep(sweep.dir)
    assert table.params == ["model.beta"]
    failed_row = next(row for row in table.rows if row.params["model.beta"] == -1)
    assert (failed_row.n, len(failed_row.failed)) == (0, 1)
    assert not failed_row.best and sum(row.best for row in table.rows) == 1
    markdown = (sweep.dir / "comparison.md").read_text()
    assert "## Runs that did not complete" in markdown and "model.beta=-1 is not allowed" in markdown


def test_a_sweep_can_keep_exit_status_0_when_jobs_fail(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "model.beta=-1", "hydra.callbacks.sweep_summary.fail_on_job_error=false", *TINY_VAE)
    assert sweep.process.returncode == 0, sweep.process.stderr[-3000:]
    assert sweep.summary["failed"] == 1


def test_submitit_local_runs_a_job_to_completion(tmp_path: Path) -> None:
    sweep = Sweep(tmp_path, "hydra/launcher=submitit_local", "seed=3", *TINY_VAE, process=True)
    assert sweep.process.returncode == 0, sweep.process.stderr[-3000:]
    (job,) = sweep.jobs
    assert sweep.json(job, "manifest.json")["status"] == "completed"
    assert math.isfinite(sweep.json(job, "metrics.json")["val/elbo"])


def test_ddp_inside_a_multirun_leaves_one_folder_per_job(tmp_path: Path) -> None:
    """Two CPU processes (DDP) in one job of a sweep: one run folder, the steps of both processes' batches, and
    metrics.json naming the checkpoint it evaluated. One job: every job of a sweep starts its DDP workers alike."""
    sweep = Sweep(tmp_path, "trainer=ddp_sim", "seed=1", *TINY_VAE, process=True)
    assert sweep.process.returncode == 0, sweep.process.stderr[-4000:]
    (job,) = sweep.jobs
    manifest, metrics = sweep.json(job, "manifest.json"), sweep.json(job, "metrics.json")
    assert (manifest["seed"], manifest["status"]) == (1, "completed")
    assert math.isfinite(metrics["val/elbo"]) and math.isfinite(metrics["test/elbo"])
    # Each process ran 2 batches per epoch (trainer.limit_train_batches=2): 2 epochs -> 4 optimizer steps.
    assert torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    best = torch.load(job / metrics["checkpoint"], weights_only=False)
    assert (metrics["epoch"], metrics["global_step"]) == (best["epoch"], best["global_step"])
    # Nothing beside the sweep folder: the DDP workers joined their job instead of starting sweeps or runs.
    assert [p.name for p in (sweep.log_dir / "train").iterdir()] == ["multiruns"]


def test_compare_on_a_folder_without_runs_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = compare(tmp_path)
    assert result.returncode == 2
    message = f"genlab-compare: error: no run folders (with .hydra/config.yaml) under {tmp_path}"
    assert result.stderr.strip().splitlines() == [message]


def test_compare_runs_of_different_models_on_shared_metrics_only(grid: Sweep, genlab_train) -> None:
    lm = genlab_train(
        *TINY_LM_NET,
        "data=python_source",
        "data.max_chars=20000",
        "data.steps_per_epoch=2",
        *TINY,
    ).check()
    result = compare(grid.jobs[0], lm.dir, "--out", lm.dir.parent, "--group-by", "none")
    assert result.returncode == 0, result.stderr
    assert "runs of different models (TransformerLM, VAE): compared on the metrics they all have only" in result.stdout
    # By default one table per model, each with its own judged metric shown; --metrics chooses the columns.
    grouped = compare(grid.jobs[0], lm.dir, "--out", lm.dir.parent, "--metrics", "val/loss", "val/elbo")
    assert grouped.returncode == 0, grouped.stderr
    assert "model=TransformerLM: 1 runs" in grouped.stdout and "best by val/loss" in grouped.stdout
    assert "model=VAE: 1 runs" in grouped.stdout and "best by val/elbo" in grouped.stdout
    assert "## model=VAE" in (lm.dir.parent / "comparison.md").read_text()
    table = load_sweep([grid.jobs[0], lm.dir])
    shared = {k for k in lm.metrics if "/" in k} & {k for k in grid.json(grid.jobs[0], "metrics.json") if "/" in k}
    assert set(table.metrics) == shared
    assert table.judged_metric is None and not any(row.best for row in table.rows)
    assert table.params[:2] == ["data", "model"]


def test_sweep_configs_compose(compose_config) -> None:
    for name in ("vae", "transformer", "gan"):
        cfg = compose_config(f"hparams_search={name}_optuna")
        assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
        assert cfg.hydra.sweeper.direction == "minimize", name  # val/elbo, val/loss, val/fid: lower is better

    cfg = compose_config("hydra/launcher=slurm", "trainer=ddp", "trainer.num_nodes=2", "hydra.launcher.gpus_per_node=4")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (2, 4, 4)


def test_wandb_groups_the_runs_of_a_sweep(compose_config) -> None:
    cfg = compose_config("logger=wandb")
    assert cfg.logger.wandb.group is None
    with read_write(cfg.hydra):
        cfg.hydra.mode = RunMode.MULTIRUN
    HydraConfig.instance().set_config(cfg)
    assert cfg.logger.wandb.group == Path(cfg.hydra.sweep.dir).name


NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "compare_runs.ipynb"


def test_compare_notebook_is_stored_without_outputs() -> None:
    notebook = json.loads(NOTEBOOK.read_text())
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code and all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)


def test_compare_notebook_runs_on_a_sweep(grid: Sweep, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GENLAB_SWEEP", str(grid.dir))
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("| best | model.latent_dim |" in o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # curves, val/elbo against latent_dim


def test_an_interrupted_grid_sweep_continues_in_its_folder(tmp_path: Path) -> None:
    sweep_dir = tmp_path / "grid"
    command = ["model.latent_dim=4,8,16", f"hydra.sweep.dir={sweep_dir}", *TINY_VAE]
    first = Sweep(tmp_path, *command)
    assert first.process.returncode == 0, first.process.stderr[-3000:]
    completed = {p: p.read_bytes() for p in sorted((sweep_dir / "0").rglob("*")) if p.is_file()}
    # As a sweep killed during job 1 leaves it (its last.ckpt kept), before job 2 started.
    manifest = first.json(first.jobs[1], "manifest.json")
    (first.jobs[1] / "manifest.json").write_text(json.dumps({**manifest, "status": "interrupted"}))
    (first.jobs[1] / "metrics.json").unlink()
    shutil.rmtree(first.jobs[2])

    again = Sweep(tmp_path, *command, "resume=true")
    assert again.process.returncode == 0, again.process.stderr[-3000:]
    assert "job 0 completed before: kept as it is" in again.process.stdout
    assert {p: p.read_bytes() for p in sorted((sweep_dir / "0").rglob("*")) if p.is_file()} == completed
    resumed = again.json(again.jobs[1], "manifest.json")
    assert resumed["status"] == "completed" and resumed["resumes"][0]["previous_status"] == "interrupted"
    assert (again.jobs[1] / "metrics.json").is_file()
    assert again.json(again.jobs[2], "manifest.json")["status"] == "completed"
    assert again.json(again.jobs[2], "manifest.json")["overrides"][0] == "model.latent_dim=16"
    assert (again.summary["jobs"], again.summary["failed"]) == (3, 0)

    changed = call_entrypoint("genlab-train", ["-m", "model.latent_dim=4,32", *command[1:], "resume=true"],
                              cwd=tmp_path, env=train_env(tmp_path / "outputs"))  # fmt: skip
    assert changed.returncode == 2
    assert (
        "holds a sweep of other settings (differing: model.latent_dim=4,32 model.latent_dim=4,8,16)"
        in (changed.stderr.strip().splitlines()[-1])
    )
    alone = call_entrypoint("genlab-train", ["resume=true"], cwd=tmp_path, env=train_env(tmp_path / "outputs"))
    message = "resume=true continues a sweep: give it with -m and hydra.sweep.dir=SWEEP_FOLDER"
    assert (alone.returncode, alone.stderr.strip()) == (2, f"genlab-train: error: {message}")
