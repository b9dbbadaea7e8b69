"""Every private Lightning, Hydra, OmegaConf, TensorBoard, torchmetrics and torch API genlab relies on, in one place.

Each function names what it reaches and why genlab needs it; tests/test_upstream.py fails, naming the package and
its version, when an upgrade changes one of them, and pyproject.toml's pins point here. Light on purpose: the
upstream modules are imported inside the functions, because light modules (genlab.run, trust) use this one.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from hydra.core.override_parser.types import Override
    from omegaconf import Container, Node
    from pytorch_lightning import LightningModule, Trainer
    from torch import nn
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.writer import FileWriter


def lightning_logs_this_step(trainer: Trainer) -> bool:
    """`trainer._logger_connector.should_update_logs`: whether Lightning sends this step's `self.log` values to the
    loggers (every `log_every_n_steps`), so genlab's direct per-step logging writes on the same steps."""
    return trainer._logger_connector.should_update_logs


def lightning_logging_step(trainer: Trainer) -> int:
    """`trainer.fit_loop.epoch_loop._batches_that_stepped`: the step axis `self.log` writes on (not `global_step`,
    which counts every optimizer's steps), so values logged directly line up with the others."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


def count_more_logging_steps(trainer: Trainer, steps: int) -> None:
    """Advance `trainer.fit_loop.epoch_loop._batches_that_stepped` (Lightning adds one per training batch) by
    `steps` more: a Lightning step of several optimizer steps (genlab.models.executions) keeps the step axis of
    every logged value (validation's, the learning-rate monitor's) the optimizer steps', as with one."""
    trainer.fit_loop.epoch_loop._batches_that_stepped += steps


#: Set to "1" by `import lightning_fabric`, so that asking whether there is a GPU cannot poison fork.
NVML_CHECK = "PYTORCH_NVML_BASED_CUDA_CHECK"


def plain_gpu_check_without_a_gpu() -> None:
    """Where torch finds no GPU, ask for one as torch does by default (`cudaGetDeviceCount`) instead of through NVML.

    Lightning sets `PYTORCH_NVML_BASED_CUDA_CHECK=1` at import; torch's optimizers ask whether a GPU is there on
    every step (`Optimizer._accelerator_graph_capture_health_check`), and with a CUDA build of torch on a machine
    without one, NVML's check loads its library anew each time: about 100 us a call on the development machine
    against 2 us, a fifth of a tiny model's step. With no GPU there is no fork to poison, so nothing is lost.
    """
    import torch

    if os.environ.get(NVML_CHECK) == "1" and not torch.cuda.is_available():
        os.environ[NVML_CHECK] = "0"


def lightning_optimizer_step_begins(optimizer: Any) -> None:
    """`LightningOptimizer._on_before_step()`: what `LightningOptimizer.step` does before the step (the manual
    optimization loop counts it as started there), for a step genlab makes without going through the plugins
    (genlab.models.direct_steps)."""
    optimizer._on_before_step()


def lightning_optimizer_step_ends(optimizer: Any) -> None:
    """`LightningOptimizer._on_after_step()`: what `LightningOptimizer.step` does after the step (the manual
    optimization loop counts it as completed there: `trainer.global_step`)."""
    optimizer._on_after_step()


def attached_trainer(module: LightningModule) -> Trainer | None:
    """`LightningModule._trainer`: the trainer the module runs in, or None outside one (`module.trainer` raises)."""
    return module._trainer


@contextmanager
def ddp_workers_run_this_job() -> Iterator[None]:
    """Make Lightning's DDP launcher start its worker processes on this job alone, in this job's folder.

    Lightning's `_hydra_subprocess_cmd` restarts the script with `sys.argv` plus `hydra.run.dir=<hydra.run.dir>`:
    inside a sweep that is the whole sweep command (`-m seed=1,2`), so each worker would start a sweep of its own in a
    new folder. The job's own overrides and folder make each worker a single run that joins this job. Afterwards the
    process group and the variables the launcher set (LOCAL_RANK, WORLD_SIZE, MASTER_PORT, ...) go, or the next job
    in this process would take itself for a worker of the last one.
    """
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import read_write

    hydra_cfg = HydraConfig.get()
    argv, environ = sys.argv, dict(os.environ)
    sys.argv = [argv[0], *hydra_cfg.overrides.task]
    with read_write(hydra_cfg.run):
        hydra_cfg.run.dir = hydra_cfg.runtime.output_dir
    try:
        yield
    finally:
        import torch

        sys.argv = argv
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        for key in set(os.environ) - set(environ):
            del os.environ[key]
        os.environ.update(environ)


def tensorboard_file_writer(writer: SummaryWriter) -> FileWriter:
    """`SummaryWriter._get_file_writer()`: the writer of the run's own event file, so the hparams summary goes there
    (`add_hparams` would write it into a new run of its own)."""
    return writer._get_file_writer()


def fid_inception_v3(weights: str) -> nn.Module:
    """torchmetrics' `NoTrainInceptionV3` (not part of its public API): the Inception-v3 of its FID, 2048-d pool
    features, loaded from a local weights file instead of downloaded."""
    from torchmetrics.image.fid import NoTrainInceptionV3

    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights
    )


def parse_hydra_overrides(overrides: Sequence[str]) -> list[Override]:
    """Hydra's `OverridesParser` (internal to Hydra): `key=value` overrides as Hydra reads them, for a run's saved
    overrides (genlab-compare, TensorBoard's HPARAMS tab) and the overrides genlab-eval and genlab-sample apply."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(overrides))


def config_child_node(container: Container, key: str | int) -> Node:
    """OmegaConf's `container._get_node(key)`: a child as a node, an interpolation left unresolved."""
    return container._get_node(key)  # type: ignore[return-value]


def unresolved_value(container: Container, key: str | int) -> Any:
    """OmegaConf's `container._get_node(key)._value()`: a child's value as written (`${...}` unresolved), which
    `container[key]` would resolve, running a resolver of the config's choosing."""
    return config_child_node(container, key)._value()


def foreach_copy_(targets: list[torch.Tensor], sources: list[torch.Tensor]) -> None:
    """`torch._foreach_copy_`: copy each source into its target, one kernel for the whole list."""
    import torch

    torch._foreach_copy_(targets, sources)


def foreach_blend_(averaged: list[torch.Tensor], current: list[torch.Tensor], weight: torch.Tensor) -> None:
    """`torch._foreach_mul_`, `_foreach_add_`, `_foreach_mul`: averaged = weight * averaged + (1 - weight) * current
    for each pair, a few kernels for the whole list (an EMA update of every weight at once)."""
    import torch

    torch._foreach_mul_(averaged, weight)
    torch._foreach_add_(averaged, torch._foreach_mul(current, 1 - weight))


def foreach_norm(tensors: list[torch.Tensor]) -> Sequence[torch.Tensor]:
    """`torch._foreach_norm`: the L2 norm of each tensor, one kernel for the whole list."""
    import torch

    return torch._foreach_norm(tensors)


def optuna_trial(study: Any, number: int) -> Any:
    """The running trial `number` of `study`, to report to from the job that runs it: Optuna's storage looks a trial
    up by id (`_storage`, `_study_id`), and its public API gives a Trial only to the process that asked for it."""
    from optuna.trial import Trial

    trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, number)
    return Trial(study, trial_id)


def slurm_job_state(job_id: str) -> str | None:
    """A job's state as slurmctld tells it (`scontrol show job`, for some minutes after the job ended), or None."""
    try:
        shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    found = re.search(r"\bJobState=(\w+)", shown.stdout)
    return found.group(1) if found else None


@contextmanager
def submitit_results_of_dead_jobs(replacement: Callable[[Any, Exception], list]) -> Iterator[None]:
    """Within the block, submitit's `Job.results()` of a job that left no result (killed, out of memory, its node
    lost) is `replacement(job, error)` instead of UncompletedJobError: Hydra's submitit launcher collects a sweep's
    results with it, so the first such job would end the whole sweep. And where the cluster keeps no accounting
    (`sacct` fails), a job's state comes from slurmctld instead of staying UNKNOWN, which submitit waits on forever
    once the job died without a result."""
    from submitit.core.core import Job
    from submitit.core.utils import UncompletedJobError
    from submitit.slurm.slurm import SlurmInfoWatcher

    original_results, original_state = Job.results, SlurmInfoWatcher.get_state

    def results(job: Any) -> list:
        try:
            return original_results(job)
        except UncompletedJobError as error:
            return replacement(job, error)

    def get_state(watcher: Any, job_id: str, mode: str = "standard") -> str:
        state = original_state(watcher, job_id, mode)
        return (slurm_job_state(job_id) or state) if state == "UNKNOWN" else state

    Job.results, SlurmInfoWatcher.get_state = results, get_state
    try:
        yield
    finally:
        Job.results, SlurmInfoWatcher.get_state = original_results, original_state
