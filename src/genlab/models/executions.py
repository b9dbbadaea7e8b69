"""Several training steps per Lightning step (`steps_per_execution=K`, after Keras' setting of that name).

Lightning spends about half a millisecond of bookkeeping on every training batch (hooks, the optimization closure,
result collection): at the ~1 ms step of a small model on MNIST that is a third of the time. With K > 1 the training
loader yields K batches at once (the same samples in the same order: only its batch size is K times larger) and the
model makes K training steps on them in one Lightning step, by manual optimization, with what Lightning's automatic
optimization does each step done here instead: gradient accumulation, clipping, the learning-rate schedule and the
model's own `optimizer_step` (the diffusion model's EMA). A model that steps its optimizers itself (the GAN) has its
`training_batch` called once per batch. On CPU the weights are those of K = 1, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from genlab.upstream import count_more_logging_steps, lightning_logging_step

if TYPE_CHECKING:
    from genlab.models.base import GenerativeModel

Batch = Any


def split_batch(batch: Batch, size: int) -> list[Batch]:
    """A training block (a tensor, or a tuple or list of tensors) cut into consecutive batches of `size` samples."""
    if isinstance(batch, torch.Tensor):
        return list(batch.split(size))
    if isinstance(batch, (tuple, list)):
        parts = [split_batch(item, size) for item in batch]
        return [type(batch)(items) for items in zip(*parts, strict=True)]
    raise TypeError(f"steps_per_execution cannot split a training batch of type {type(batch).__name__}")


def chunks(items: Sequence[Any], size: int) -> list[Sequence[Any]]:
    """`items` in consecutive groups of `size` (the last one shorter, as Lightning accumulates an epoch's tail)."""
    return [items[start : start + size] for start in range(0, len(items), size)]


@dataclass(frozen=True)
class StepsPerExecution:
    """How one Lightning step of K optimizer steps runs: `batch_size` samples per (micro-)batch, `accumulate`
    batches per optimizer step, and the clipping that the Trainer would have done (Lightning allows neither clipping
    nor accumulation from the Trainer under manual optimization, so they move here)."""

    steps: int
    batch_size: int
    accumulate: int = 1
    clip_val: float | None = None
    clip_algorithm: Literal["norm", "value"] | None = None

    def run(self, model: GenerativeModel, block: Batch, block_idx: int) -> torch.Tensor:
        """The training steps of one block; returns the last one's loss (what Lightning shows)."""
        trainer = model.trainer
        batches = split_batch(block, self.batch_size)
        step = self._step_of_itself if model.steps_itself else self._step
        first_step = lightning_logging_step(trainer)  # the steps (of all optimizers: batches) made before the block
        loss = torch.zeros(())
        steps = 0
        for group in chunks(batches, self.accumulate):
            if 0 <= trainer.max_steps <= trainer.global_step:
                break
            model.execution_step = first_step + steps
            loss = step(model, group, block_idx * self.steps * self.accumulate + steps * self.accumulate)
            steps += 1
        model.execution_step = None
        count_more_logging_steps(trainer, max(steps - 1, 0))  # Lightning counts the one
        return loss

    def _step(self, model: GenerativeModel, group: Sequence[Batch], batch_idx: int) -> torch.Tensor:
        """One optimizer step on `group`'s batches, as Lightning's automatic optimization makes it."""
        optimizer = model.optimizers()
        closure = self._closure(model, optimizer, group, batch_idx)
        model.optimizer_step(model.trainer.current_epoch, batch_idx, model.stepping_optimizer(optimizer), closure)
        optimizer.zero_grad(set_to_none=True)
        if model.scheduler_interval == "step":
            step_schedulers(model)
        return closure.loss

    @staticmethod
    def _step_of_itself(model: GenerativeModel, group: Sequence[Batch], batch_idx: int) -> torch.Tensor:
        """The step of a model that steps its optimizers itself (no accumulation: one batch)."""
        return model.training_batch(group[0], batch_idx)

    def _closure(self, model: GenerativeModel, optimizer: Any, group: Sequence[Batch], batch_idx: int) -> _Closure:
        def backward() -> torch.Tensor:
            loss = torch.zeros(())
            for offset, batch in enumerate(group):
                loss = model.training_loss(batch, batch_idx + offset)
                model.backward_pass(loss / self.accumulate if self.accumulate > 1 else loss)  # as Lightning
            if self.clip_val is not None:
                model.clip_gradients(
                    optimizer, gradient_clip_val=self.clip_val, gradient_clip_algorithm=self.clip_algorithm or "norm"
                )
            return loss.detach()

        return _Closure(backward)


class _Closure:
    """The optimizer's closure (backward of one step's batches), keeping the loss it returned."""

    def __init__(self, backward: Callable[[], torch.Tensor]) -> None:
        self.backward = backward
        self.loss = torch.zeros(())

    def __call__(self) -> torch.Tensor:
        self.loss = self.backward()
        return self.loss


def step_schedulers(model: GenerativeModel) -> None:
    """Manual optimization leaves the learning-rate schedulers to the model."""
    schedulers = model.lr_schedulers()
    if schedulers is None:
        return
    for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
        scheduler.step()
