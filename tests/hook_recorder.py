"""A callback that writes down every backward and optimizer-step hook Lightning (or genlab's direct path) calls, with
what it was called with, into `hooks.json` in the run folder (tests/test_direct_steps.py reads it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch


def gradient_sum(module: torch.nn.Module) -> float:
    return float(sum(p.grad.double().sum() for p in module.parameters() if p.grad is not None))


class HookRecorder(pl.Callback):
    def __init__(self) -> None:
        self.calls: list[list[Any]] = []
        self.direct: set[bool] = set()

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: torch.Tensor) -> None:
        self.direct.add(pl_module.direct_steps is not None)
        self.calls.append(["before_backward", trainer.global_step, float(loss)])

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.calls.append(["after_backward", trainer.global_step, gradient_sum(pl_module)])

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Any) -> None:
        which = next(i for i, known in enumerate(trainer.optimizers) if known is optimizer)
        self.calls.append(["before_optimizer_step", trainer.global_step, which, gradient_sum(pl_module)])

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        record = {"direct": sorted(self.direct), "calls": self.calls}
        (Path(trainer.default_root_dir) / "hooks.json").write_text(json.dumps(record))
