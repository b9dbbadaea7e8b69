"""`genlab-train`: compose the config with Hydra, then run the job (`genlab.training`).

This module stays light: `--help`, `--cfg job` and a misspelt key or option answer without importing torch or
Lightning, which are imported by the job once the config is composed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import hydra
from omegaconf import DictConfig

from genlab.config import config_dir
from genlab.errors import exit_on_user_error
from genlab.run.guard import process_rank
from genlab.run.resume import check_resume


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def run(cfg: DictConfig) -> float | None:
    from genlab.training import run_job

    # Inside the job too: Hydra would otherwise add its own "Error executing job" line.
    with exit_on_user_error("genlab-train"):
        return run_job(cfg)


@contextmanager
def hydra_errors_raised() -> Iterator[None]:
    """Let Hydra raise its errors instead of printing them with a hint about HYDRA_FULL_ERROR and exiting 1:
    genlab turns those of the user's input into one line (exit status 2), and a bug keeps its whole traceback."""
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved


def keep_other_ranks_out_of_hydra_folder(arguments: list[str]) -> None:
    """Ranks above 0 of a job launched by hand (torchrun, SLURM) write Hydra's record of the config to their own
    subfolder, as Lightning's own launcher does: otherwise a rank that starts first would fill `.hydra/` before rank 0
    has checked that the run folder is new, and rank 0 would refuse its own job's folder."""
    rank = process_rank()
    if rank > 0 and not any(argument.startswith("hydra.output_subdir=") for argument in arguments):
        arguments.append(f"hydra.output_subdir=.hydra_rank{rank}")


def main() -> None:
    """The `genlab-train` console script."""
    with exit_on_user_error("genlab-train"), hydra_errors_raised():
        check_resume(sys.argv[1:])
        keep_other_ranks_out_of_hydra_folder(sys.argv)
        run()


if __name__ == "__main__":
    main()
