"""Lightning's backward pass and optimizer step for the models that make them themselves (the GAN, and every model at
`steps_per_execution` > 1), calling only the hooks something defines.

`manual_backward` and `LightningOptimizer.step` go through the strategy and the precision plugin, which call every
callback's and the module's `on_before_backward`, `on_after_backward` and `on_before_optimizer_step` through
Lightning's hook dispatcher, each in a profiler context, whether or not anything defines the hook: a fixed cost per
callback and optimizer step that a small model on a CPU feels (benchmarks/). On one device in 32-bit precision without a
profiler those plugins do nothing else, so `DirectSteps` calls the same hooks itself: the overridden ones, in
Lightning's order (the callbacks', then the module's), with the same arguments. Any other strategy (DDP), precision
(mixed, 64-bit) or profiler keeps Lightning's path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer
from pytorch_lightning.plugins.precision import Precision
from pytorch_lightning.profilers import PassThroughProfiler
from pytorch_lightning.strategies import SingleDeviceStrategy

from genlab.upstream import lightning_optimizer_step_begins, lightning_optimizer_step_ends

Hook = Callable[..., None]


def defined_hooks(trainer: pl.Trainer, name: str) -> tuple[Hook, ...]:
    """The callbacks' and then the module's hook `name` where it is overridden, bound to the arguments Lightning
    passes before the hook's own (the trainer and module, for a callback)."""
    module = trainer.lightning_module
    hooks: list[Hook] = [
        _bound(getattr(callback, name), trainer, module)
        for callback in trainer.callbacks
        if getattr(type(callback), name) is not getattr(pl.Callback, name)
    ]
    if getattr(type(module), name) is not getattr(pl.LightningModule, name):
        hooks.append(getattr(module, name))
    return tuple(hooks)


def _bound(hook: Hook, *first: Any) -> Hook:
    return lambda *rest: hook(*first, *rest)


@dataclass(frozen=True)
class DirectSteps:
    """The hooks of a fit that steps by itself, looked up once (at the start of training)."""

    before_backward: tuple[Hook, ...]
    after_backward: tuple[Hook, ...]
    before_optimizer_step: tuple[Hook, ...]

    @classmethod
    def of(cls, trainer: pl.Trainer) -> DirectSteps | None:
        """The direct path for `trainer`'s fit, or None where Lightning's plugins do more than call hooks."""
        plain = (
            type(trainer.strategy) is SingleDeviceStrategy
            and type(trainer.precision_plugin) is Precision
            and isinstance(trainer.profiler, PassThroughProfiler)
        )
        if not plain:
            return None
        return cls(
            defined_hooks(trainer, "on_before_backward"),
            defined_hooks(trainer, "on_after_backward"),
            defined_hooks(trainer, "on_before_optimizer_step"),
        )

    def backward(self, module: pl.LightningModule, loss: torch.Tensor) -> None:
        """`module.manual_backward(loss)`."""
        for hook in self.before_backward:
            hook(loss)
        module.backward(loss)
        for hook in self.after_backward:
            hook()

    def optimizer_step(self, optimizer: LightningOptimizer, closure: Callable[[], Any] | None = None) -> Any:
        """`optimizer.step(closure)`: the closure (if any), the `on_before_optimizer_step` hooks, then the step of
        the optimizer inside, counted as Lightning counts it (`trainer.global_step`)."""
        inner = optimizer.optimizer

        def closure_then_hooks() -> Any:
            result = closure() if closure is not None else None
            for hook in self.before_optimizer_step:
                hook(inner)
            return result

        lightning_optimizer_step_begins(optimizer)
        result = inner.step(closure=closure_then_hooks)
        lightning_optimizer_step_ends(optimizer)
        return result


class DirectOptimizer:
    """A LightningOptimizer whose `step` takes the direct path: what a model's `optimizer_step` override receives,
    so that it steps the same way (everything else is the LightningOptimizer's)."""

    def __init__(self, optimizer: LightningOptimizer, steps: DirectSteps) -> None:
        self._lightning_optimizer = optimizer
        self._steps = steps

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return self._steps.optimizer_step(self._lightning_optimizer, closure)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._lightning_optimizer, name)
