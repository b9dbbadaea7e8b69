"""Every file and folder name of a run folder, defined once; commands, callbacks, the configs (the `${run_folder:...}`
resolver) and genlab-compare ask here instead of spelling paths.

```
RUN/
  .hydra/config.yaml     the resolved config (CONFIG_FILE), Hydra's overrides.yaml and hydra.yaml beside it
  .lock                  held by the process writing the run (LOCK_FILE, genlab.run.lock)
  manifest.json          status, seed, git commit, versions (MANIFEST_FILE, genlab.run.manifest)
  metrics.json           the final metrics of the best checkpoint (METRICS_FILE, genlab.run.records)
  checkpoints/           best*.ckpt and last.ckpt (CHECKPOINTS, LAST; genlab.run.checkpoints)
  samples/               SampleWriter's pictures and texts over training (SAMPLES_DIR)
  generated/             genlab-sample's output by default (GENERATED_DIR)
  evals/                 genlab-eval's records, eval.json and eval_<time>.json (EVALS_DIR, EVAL_FILE)
  tensorboard/           the TensorBoard logger's event files (TENSORBOARD_DIR)
  csv/metrics.csv        the CSV logger's table (CSV_METRICS)
```
A sweep folder holds one run folder per job and Hydra's multirun.yaml (MULTIRUN_FILE). Beside the runs folder,
`latest` (LATEST, genlab.run.latest) links to the run that completed last: `genlab-eval run=outputs/train/latest`.
"""

from __future__ import annotations

from pathlib import Path

from genlab.errors import ConfigError

HYDRA_DIR = ".hydra"
CONFIG_FILE = Path(HYDRA_DIR) / "config.yaml"
LOCK_FILE = ".lock"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
#: Where a run keeps its checkpoints, and the name of the one written after every validation (what `resume=`
#: continues from). The callbacks config reads both through the `${run_folder:...}` resolver.
CHECKPOINTS = "checkpoints"
LAST = "last"
SAMPLES_DIR = "samples"
GENERATED_DIR = "generated"
EVALS_DIR = "evals"
EVAL_FILE = "eval.json"
TENSORBOARD_DIR = "tensorboard"
CSV_DIR = "csv"
CSV_METRICS = Path(CSV_DIR) / "metrics.csv"
MULTIRUN_FILE = "multirun.yaml"
#: The folder of single runs (outputs/<task>/RUNS_DIR/<name>) and the link beside it to the last one completed.
RUNS_DIR = "runs"
LATEST = "latest"
#: The Optuna sweeper's study (SQLite) in its sweep folder, unless hydra.sweeper.storage names another database.
STUDY_FILE = "optuna.db"
#: The names the configs read with `${run_folder:NAME}` (callbacks/default.yaml, logger/csv.yaml, logger/...).
LAYOUT = {
    "checkpoints": CHECKPOINTS,
    "last": LAST,
    "samples": SAMPLES_DIR,
    "tensorboard": TENSORBOARD_DIR,
    "csv": CSV_DIR,
}


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


def holds_a_run(folder: Path) -> bool:
    """Whether `folder` already holds a run (or a sweep's runs) that a new one would overwrite."""
    markers = [MANIFEST_FILE, str(CONFIG_FILE), METRICS_FILE, CHECKPOINTS, MULTIRUN_FILE]
    return any((folder / marker).exists() for marker in markers) or any(folder.glob(f"*/{MANIFEST_FILE}"))
