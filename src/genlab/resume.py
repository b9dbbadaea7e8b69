"""`genlab-train resume=RUN_DIR`: continue a run in its own folder, from its last.ckpt, with its own config."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.errors import check, exit_on_user_error
from genlab.run_folder import CONFIG_FILE, apply_overrides, check_run_dir, checkpoint_dir, run_config
from genlab.sweeps import in_multirun

if TYPE_CHECKING:
    from genlab.manifest import Manifest

#: What `resume=` lets change: how long to train and how to show it, never what or how the model learns.
RESUMABLE = (
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.max_time",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    "callbacks.progress_bar",
    "callbacks.samples.every_n_epochs",
    "test",
)


def resumed_config(resume: str, overrides: list[str]) -> DictConfig:
    """The saved config of the run to continue, from its last.ckpt, with the overrides `RESUMABLE` allows.

    The changes are written back into the run's .hydra/config.yaml, so later evaluations and resumes see them.
    """
    run_dir = check_run_dir(resume, "resume")
    check(not in_multirun(), "resume= continues one run; it cannot be part of a sweep (-m)")
    changes = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "resume"]
    unsafe = [key for key in (o.split("=", 1)[0].lstrip("+~") for o in changes) if key not in RESUMABLE]
    check(
        not unsafe,
        f"resume= continues a run with its own config, so {', '.join(unsafe)} cannot change; "
        f"allowed: {', '.join(RESUMABLE)}",
    )
    if changes:
        saved = OmegaConf.load(run_dir / CONFIG_FILE)
        apply_overrides(saved, changes)
        OmegaConf.save(saved, run_dir / CONFIG_FILE)
    cfg = run_config(run_dir)
    last = checkpoint_dir(cfg, run_dir) / "last.ckpt"
    check(last.is_file(), f"resume={resume}: {last} does not exist; the run saved no checkpoint to continue from")
    cfg.ckpt_path = str(last)
    cfg.resume = str(run_dir)
    return cfg


def use_one_wandb_run(cfg: DictConfig, manifest: Manifest) -> None:
    """One W&B run id per run folder, kept in its manifest, so `resume=` continues the same W&B run."""
    for entry in (cfg.get("logger") or {}).values():
        if entry is not None and str(entry.get("_target_", "")).endswith("WandbLogger"):
            with open_dict(entry):
                entry.id = entry.get("id") or manifest.content.setdefault("wandb_id", secrets.token_hex(4))
                entry.resume = "allow"


def check_resume_argument(arguments: list[str]) -> None:
    """A `resume=` that is not a run folder stops here, before Hydra creates (or logs into) that folder."""
    with exit_on_user_error("genlab-train"):
        for argument in arguments:
            key, _, value = argument.partition("=")
            if key.lstrip("+") == "resume" and value not in ("", "null"):
                check_run_dir(value, "resume")
