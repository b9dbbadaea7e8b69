"""`genlab-train`: compose the config, build data, model, callbacks, loggers and trainer, fit, then evaluate
the best checkpoint and write `metrics.json` into the run folder."""

from __future__ import annotations

import inspect
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from genlab.config import config_dir
from genlab.console import print_metrics
from genlab.errors import ConfigError, check, exit_on_user_error
from genlab.manifest import Manifest
from genlab.runs import write_metrics

# Data lives in memory and is batched by index: worker processes would only add start-up time.
warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
# Lightning 2.6 on torch >= 2.10 warns about its own pytree use on every run; nothing a user can act on.
warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated.*")


def check_settings(node: DictConfig, where: str, injected: tuple[str, ...] = ()) -> None:
    """Fail on a setting the `_target_` does not take, naming the ones it does, before anything is built.

    Hydra reports such a key itself when it builds the object; the model is built later (it needs the data's spec)
    and calls its net, so without this a misspelt `+model.x=...` would surface as a TypeError traceback.
    """
    target = get_object(node._target_)
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = [key for key in node if not str(key).startswith("_") and key not in parameters]
    if unknown:
        known = ", ".join(name for name in parameters if name not in ("self", *injected))
        raise ConfigError(f"{where} has no setting {', '.join(unknown)}; {target.__name__} takes: {known}")


def check_model_settings(cfg: DictConfig) -> None:
    """The model's and its net's settings, minus what the model supplies itself (spec; the net's sizes)."""
    check_settings(cfg.model, "model", injected=("spec",))
    if isinstance(cfg.model.get("net"), DictConfig):
        check_settings(cfg.model.net, "model.net", injected=("shape", "latent_dim", "vocab_size", "block_size"))


def check_checkpoint_file(path: Path) -> None:
    """A missing or truncated checkpoint fails here, in one line, before any data or model is built.

    torch.save writes a zip archive whose directory sits at the end, so a cut-off file is no longer a zip.
    """
    check(path.is_file(), f"ckpt_path={path} is not a file; give the path of a .ckpt file, or ckpt_path=last")
    check(
        zipfile.is_zipfile(path),
        f"ckpt_path={path} is not a readable checkpoint (truncated, or not written by torch.save); "
        f"use another .ckpt, e.g. the run's checkpoints/last.ckpt",
    )


def instantiate_each(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group such as `callbacks` or `logger`; `null` entries are skipped."""
    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def evaluate_best(
    trainer: pl.Trainer, model: pl.LightningModule, datamodule: pl.LightningDataModule, test: bool
) -> tuple[dict[str, float], str]:
    """Validation (and test) metrics of the best checkpoint, so every number in metrics.json describes one model.

    Without a checkpoint (e.g. fast_dev_run) the weights in memory are evaluated.
    """
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    ckpt_path = best or None
    metrics = dict(trainer.validate(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    if test:
        metrics.update(trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)[0])
    return metrics, best


def train(cfg: DictConfig) -> float | None:
    """Run one training job; returns the judged metric (for sweepers)."""
    run_dir = Path(cfg.paths.output_dir)
    check_model_settings(cfg)  # before any data is read: text data reads and tokenizes its corpus for the spec
    ckpt_path = cfg.get("ckpt_path")
    if ckpt_path not in (None, "last"):
        check_checkpoint_file(Path(ckpt_path))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)

    datamodule = instantiate(cfg.data)
    # The spec is passed after instantiation: Hydra would turn a dataclass argument into a config node.
    model = instantiate(cfg.model, _partial_=True)(spec=datamodule.spec)
    callbacks = instantiate_each(cfg.get("callbacks"))
    loggers = instantiate_each(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)

    config = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams(config)

    trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics, best = evaluate_best(trainer, model, datamodule, test=cfg.test)
    if trainer.is_global_zero:
        # The epoch and step of the evaluated checkpoint (validate/test restore weights, not the loop counters).
        state = torch.load(best, map_location="cpu", weights_only=False) if best else {}
        write_metrics(
            run_dir,
            metrics,
            model.judged_metric,
            model.judged_mode,
            checkpoint=os.path.relpath(best, run_dir) if best else None,
            epoch=state.get("epoch", trainer.current_epoch),
            global_step=state.get("global_step", trainer.global_step),
        )
        print_metrics(metrics, model.judged_metric, run_dir)
    return metrics.get(model.judged_metric)


@hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    manifest = Manifest(Path(cfg.paths.output_dir), cfg.seed, list(HydraConfig.get().overrides.task))
    with exit_on_user_error("genlab-train"), manifest.track():
        return train(cfg)


if __name__ == "__main__":
    main()
