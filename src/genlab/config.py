"""Where the configs live and the OmegaConf resolvers they use.

Importing this module registers the resolvers, so every entrypoint imports it before Hydra composes.
"""

from __future__ import annotations

import netrc
import os
import secrets
from datetime import datetime
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from genlab.run.layout import CONFIG_FILE, HYDRA_DIR, LAYOUT


def config_dir() -> Path:
    """The `conf/` folder: inside the installed package (wheel), else at the top of the source tree (editable)."""
    packaged = Path(__file__).resolve().parent / "conf"
    if packaged.is_dir():
        return packaged
    source_tree = Path(__file__).resolve().parents[2] / "conf"
    if source_tree.is_dir():
        return source_tree
    raise FileNotFoundError(f"genlab's configs are missing: looked in {packaged} and {source_tree}")


def judged_by(cfg: DictConfig) -> tuple[str, str]:
    """(metric, mode) a run is judged by: its metrics group's declaration if it makes one, else its model's.

    A model declares its metric as class attributes (`judged_metric`, `judged_mode`: val/loss for the language
    model). A metrics callback may declare its own the same way when the data domain, not the model, decides what
    a good run is: the chemistry metrics (`metrics=molecules`) judge a language model of molecules by a sample
    metric, while the same model on plain text stays judged by val/loss.
    """
    metrics = cfg.get("metrics")
    if metrics and "_target_" in metrics:
        declared = get_class(metrics._target_)
        if getattr(declared, "judged_metric", None):
            return declared.judged_metric, declared.judged_mode
    model_class = get_class(cfg.model._target_)
    return model_class.judged_metric, model_class.judged_mode


def _judged(field: str, *, _root_: DictConfig) -> str:
    """`${judged:metric}` / `${judged:mode}` / `${judged:direction}`: see `judged_by`."""
    if field not in ("metric", "mode", "direction"):
        raise ValueError(f"${{judged:{field}}}: expected 'metric', 'mode' or 'direction'")
    metric, mode = judged_by(_root_)
    if field == "direction":  # Optuna's word for the mode
        return {"min": "minimize", "max": "maximize"}[mode]
    return metric if field == "metric" else mode


def _sweep_name() -> str | None:
    """`${sweep_name:}`: the sweep folder's name in a job of a multirun (W&B groups a sweep's runs by it), else null."""
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return Path(HydraConfig.get().sweep.dir).name


def _ddp_strategy(*, _root_: DictConfig) -> str:
    """`${ddp_strategy:}`: DDP, with unused-parameter detection for models that need it.

    A GAN's discriminator step leaves the generator without gradients (and the reverse), which plain DDP treats
    as an error; models say so with `ddp_find_unused_parameters = True`.
    """
    model_class = get_class(_root_.model._target_)
    return "ddp_find_unused_parameters_true" if getattr(model_class, "ddp_find_unused_parameters", False) else "ddp"


def _gpu_precision(precision: str, *, _root_: DictConfig) -> str:
    """`${gpu_precision:bf16-mixed}`: the GPU recipes' mixed precision on accelerators, 32-true on a CPU (as
    nanoGPT does there): CPUs without bf16 instructions emulate it at about half fp32's speed. `trainer=cpu` with a
    GPU recipe then trains in full precision; `trainer.precision=bf16-mixed` still asks for it explicitly."""
    accelerator = str(_root_.trainer.get("accelerator", "auto"))
    if accelerator == "auto":
        import torch  # only for accelerator=auto: the question is whether Lightning will pick a GPU

        accelerator = "gpu" if torch.cuda.is_available() or torch.backends.mps.is_available() else "cpu"
    return "32-true" if accelerator == "cpu" else precision


def _wandb_offline() -> bool:
    """Run W&B offline unless the user configured it, so a run never stops at a login prompt."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode:
        return mode in ("offline", "dryrun", "disabled")
    if os.environ.get("WANDB_API_KEY"):
        return False
    try:
        netrc_file = os.environ.get("NETRC") or str(Path.home() / ".netrc")
        return netrc.netrc(netrc_file).authenticators("api.wandb.ai") is None
    except (OSError, netrc.NetrcParseError):
        return True


def shared_run_id() -> str | None:
    """The name of the run folder that every rank of one job launched by hand shares, or None for a single process.

    `srun genlab-train ...` (several SLURM tasks) and `torchrun` start one genlab-train per rank: each would pick a
    run folder of its own from the time and a random suffix. They share their launcher's job id instead:
    `GENLAB_RUN_ID` if set, else the SLURM job and step, else torchrun's rendezvous id (give `--rdzv-id`).
    """
    if os.environ.get("GENLAB_RUN_ID"):
        return os.environ["GENLAB_RUN_ID"]
    if int(os.environ.get("SLURM_NTASKS", "1") or 1) > 1 and os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}-{os.environ.get('SLURM_STEP_ID', '0')}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1 and run_id != "none":
        return f"torchrun-{run_id}"
    return None


def _run_name() -> str:
    """`${run_name:}`: a new run's folder name: date, time and a random suffix (two runs started in the same second
    never share a folder), or the id shared by the ranks of one job (`shared_run_id`)."""
    return shared_run_id() or f"{datetime.now():%Y-%m-%d_%H-%M-%S}_{secrets.token_hex(3)}"


def _config_subdir(output_dir: str) -> str | None:
    """`${config_subdir:${hydra.runtime.output_dir}}`: where Hydra saves the job's config (.hydra), or null when the
    folder already holds a saved config (a resumed run, a job of a continued sweep), which is never overwritten."""
    return None if (Path(output_dir) / CONFIG_FILE).is_file() else HYDRA_DIR


def register_resolvers() -> None:
    """Register genlab's resolvers once; safe to call again."""
    # Cached, so a config resolves it once (the folder Hydra creates is the folder the job writes).
    OmegaConf.register_new_resolver("run_name", _run_name, use_cache=True, replace=True)
    OmegaConf.register_new_resolver("judged", _judged, replace=True)
    OmegaConf.register_new_resolver("wandb_offline", _wandb_offline, replace=True)
    # `${if_set:value,then,otherwise}`: `then` unless value is null (e.g. the run folder of `resume=`).
    OmegaConf.register_new_resolver(
        "if_set", lambda value, then, otherwise: otherwise if value is None else then, replace=True
    )
    OmegaConf.register_new_resolver("config_subdir", _config_subdir, replace=True)
    OmegaConf.register_new_resolver("sweep_name", _sweep_name, replace=True)
    OmegaConf.register_new_resolver("ddp_strategy", _ddp_strategy, replace=True)
    OmegaConf.register_new_resolver("gpu_precision", _gpu_precision, replace=True)
    # `${run_folder:checkpoints}`, `${run_folder:last}`: the run folder's layout, defined once in genlab.run.layout.
    OmegaConf.register_new_resolver("run_folder", lambda name: LAYOUT[name], replace=True)


register_resolvers()
