"""`hydra/sweeper=optuna`: the Hydra side of genlab's Optuna sweeper (genlab.sweeper does the work).

Hydra imports every module under `hydra_plugins` when it starts, for every command: nothing heavy at the top here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class OptunaSweeper(Sweeper):
    """Runs an Optuna study, each trial one job of the configured launcher (see conf/hydra/sweeper/optuna.yaml)."""

    def __init__(self, **settings: Any) -> None:
        self.settings = settings
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from genlab.errors import exit_on_user_error
        from genlab.files import write_text_atomically
        from genlab.run.layout import MULTIRUN_FILE
        from genlab.sweeper.study import StudySettings, best_summary, run_study

        assert self.config is not None
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / MULTIRUN_FILE)
        with exit_on_user_error("genlab-train"):
            study = run_study(StudySettings(**self.settings), sweep_dir, list(arguments), self.launcher.launch)
        write_text_atomically(sweep_dir / "optimization_results.yaml", OmegaConf.to_yaml(best_summary(study)))
        return study
