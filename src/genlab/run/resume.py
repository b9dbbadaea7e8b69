"""`genlab-train resume=RUN_DIR`: continue a run in its own folder, from its last.ckpt, with its own config.

Everything that can refuse a resume is checked before Hydra starts (it would already write into the run folder):
the folder, the overrides, the saved config, the last checkpoint, and whether another process is writing the run.
A refused resume changes nothing in the folder; the accepted changes are written back atomically by the job.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf, open_dict

from genlab.errors import check
from genlab.files import write_text_atomically
from genlab.run.checkpoints import check_checkpoint_file, last_checkpoint
from genlab.run.config import apply_overrides, read_config, run_config
from genlab.run.layout import CONFIG_FILE, MULTIRUN_FILE, check_run_dir
from genlab.run.lock import busy_message, holder
from genlab.settings import PositiveInt
from genlab.threads import THREADS
from genlab.validation import check_value

if TYPE_CHECKING:
    from genlab.run.manifest import Manifest

#: What `resume=` lets change, and the type each takes: how long to train and how to show it, never what or how the
#: model learns. The types are those of the Trainer's and SampleWriter's arguments (tests/test_resume_checks.py holds
#: them to it), so a resume is checked without importing Lightning.
RESUMABLE: dict[str, Any] = {
    "trainer.max_epochs": int | None,
    "trainer.max_steps": int,
    "trainer.max_time": str | dict[str, int] | None,
    "trainer.enable_progress_bar": bool | None,
    "trainer.enable_model_summary": bool | None,
    "trainer.log_every_n_steps": int | None,
    "callbacks.progress_bar": dict[str, Any] | None,
    "callbacks.samples.every_n_epochs": PositiveInt,
    "test": bool,
    "threads": THREADS,
}


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def resume_argument(arguments: list[str]) -> str | None:
    """The folder of `resume=FOLDER` among the command's arguments, or None."""
    values = [a.partition("=")[2] for a in arguments if _key(a) == "resume" and "=" in a]
    return next((value for value in reversed(values) if value not in ("", "null")), None)


def changes_of(overrides: list[str]) -> list[str]:
    """The overrides that change the run (all but `resume=` itself and Hydra's own settings)."""
    return [o for o in overrides if not o.startswith("-") and _key(o) != "resume" and not _key(o).startswith("hydra.")]


def check_resume(arguments: list[str]) -> None:
    """Refuse a `resume=` that cannot go ahead, in one line, before anything is written into the run folder."""
    resume = resume_argument(arguments)
    if resume is None:
        return
    if {"-m", "--multirun"} & set(arguments) or resume == "true":
        check_sweep_resume(arguments, resume)
        return
    run_dir = check_run_dir(resume, "resume")
    changes = changes_of(arguments)
    unsafe = [_key(o) for o in changes if _key(o) not in RESUMABLE]
    check(
        not unsafe,
        f"resume= continues a run with its own config, so {', '.join(unsafe)} cannot change; "
        f"allowed: {', '.join(RESUMABLE)}",
    )
    cfg = run_config(run_dir, trust_by_name_only=True)
    apply_overrides(cfg, changes)
    for key in dict.fromkeys(_key(o) for o in changes):  # the saved config was checked when the run started
        value = OmegaConf.select(cfg, key)
        check_value(key, OmegaConf.to_container(value) if isinstance(value, DictConfig) else value, RESUMABLE[key])
    check_checkpoint_file(last_checkpoint(cfg, run_dir), "resume")
    who = holder(run_dir)
    check(who is None, busy_message(run_dir, who or {}))


def check_sweep_resume(arguments: list[str], resume: str) -> None:
    """`genlab-train -m OVERRIDES hydra.sweep.dir=SWEEP resume=true` continues that sweep with the same overrides:
    refused in one line unless SWEEP holds a sweep of exactly these settings."""
    multirun = bool({"-m", "--multirun"} & set(arguments))
    check(multirun, "resume=true continues a sweep: give it with -m and hydra.sweep.dir=SWEEP_FOLDER")
    check(
        resume == "true",
        "in a sweep (-m), resume=true continues the sweep in hydra.sweep.dir; resume=RUN_DIR is for one run",
    )
    given = [a.partition("=")[2] for a in arguments if _key(a) == "hydra.sweep.dir"]
    check(bool(given), "resume=true continues the sweep in hydra.sweep.dir: give hydra.sweep.dir=SWEEP_FOLDER")
    sweep_dir = Path(given[-1]).expanduser()
    check(
        (sweep_dir / MULTIRUN_FILE).is_file(),
        f"hydra.sweep.dir={given[-1]} holds no sweep to continue (no {MULTIRUN_FILE}); drop resume=true to start one",
    )
    saved = changes_of(list(OmegaConf.load(sweep_dir / MULTIRUN_FILE).hydra.overrides.task))
    asked = changes_of([a for a in arguments if a not in ("-m", "--multirun")])
    differ = sorted(set(saved) ^ set(asked))
    check(
        not differ,
        f"hydra.sweep.dir={given[-1]} holds a sweep of other settings (differing: {' '.join(differ)}); resume=true "
        f"continues the same sweep: repeat its overrides, or start the new sweep in another folder",
    )


def resumed_config(resume: str, overrides: list[str]) -> DictConfig:
    """The saved config of the run to continue, from its last.ckpt, with the overrides `RESUMABLE` allows.

    The changes are written back into the run's .hydra/config.yaml (atomically), so later evaluations and resumes
    see them. Called inside the job, after `check_resume` accepted the command and the run's lock is held.
    """
    run_dir = check_run_dir(resume, "resume")
    changes = changes_of(overrides)
    if changes:
        saved = read_config(run_dir / CONFIG_FILE)
        apply_overrides(saved, changes)
        write_text_atomically(run_dir / CONFIG_FILE, OmegaConf.to_yaml(saved))
    cfg = run_config(run_dir)
    cfg.ckpt_path = str(last_checkpoint(cfg, run_dir))
    cfg.resume = str(run_dir)
    return cfg


def use_one_wandb_run(cfg: DictConfig, manifest: Manifest) -> None:
    """One W&B run id per run folder, kept in its manifest, so `resume=` continues the same W&B run."""
    for entry in (cfg.get("logger") or {}).values():
        if entry is not None and str(entry.get("_target_", "")).endswith("WandbLogger"):
            with open_dict(entry):
                entry.id = entry.get("id") or manifest.content.setdefault("wandb_id", secrets.token_hex(4))
                entry.resume = "allow"
