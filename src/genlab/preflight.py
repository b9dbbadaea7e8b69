"""Check a new run before Hydra makes its folder: a bad value (`data.batch_size=abc`, `trainer.max_epochs=one`) or
data that is missing and cannot be downloaded is one line, and leaves no run folder, no data folder and no log line.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genlab.checks import check_config, check_validation_is_on_for
from genlab.errors import exit_on_user_error
from genlab.run.guard import process_rank


class CheckBeforeRun(Callback):
    """Hydra's `on_run_start`, before `run_job` creates the run folder: the whole config is checked as the job will
    check it, and the data is fetched (or refused) by its `prepare_data`. A resume is checked before Hydra starts
    (genlab.run.resume.check_resume); a sweep's jobs are checked one by one, each failure recorded in the sweep."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("resume") or process_rank() != 0:
            return
        from hydra.utils import instantiate

        cfg = copy.deepcopy(config)
        cfg.hydra.runtime.output_dir = str(Path(str(cfg.hydra.run.dir)).absolute())  # what run_job will set
        HydraConfig.instance().set_config(cfg)  # `${hydra:...}` resolves; run_job sets the real one next
        # Hydra turns an exception raised by a callback into a warning and goes on: exit here instead.
        with exit_on_user_error("genlab-train"):
            check_config(cfg)
            check_validation_is_on_for(cfg)
            instantiate(cfg.data).prepare_data()
