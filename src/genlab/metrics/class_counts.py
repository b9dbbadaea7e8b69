"""How generated images fall into classes: the classes a classifier predicts for them (mode coverage: class entropy)
and, for a conditional model, how many were asked for per class and how many of those were classified so (cond_acc)."""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ClassCounts(Metric):
    """Counts per class, as sums (`dist_reduce_fx="sum"`), so the processes of a DDP run add up. `compute()` gives
    (predicted, asked, correct): shapes (num_predicted,) and (num_asked,) twice; zero-length where not counted."""

    full_state_update = False

    def __init__(self, num_predicted: int, num_asked: int | None) -> None:
        super().__init__()
        self.add_state("predicted", torch.zeros(num_predicted, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("asked", torch.zeros(num_asked or 0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros(num_asked or 0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predicted: torch.Tensor | None, asked: torch.Tensor | None = None) -> None:
        """`predicted`: the classifier's classes of a batch of fakes (None without a classifier); `asked`: the
        classes they were generated for (None for an unconditional model)."""
        if predicted is not None:
            predicted = predicted.to(self.predicted.device)
            self.predicted += torch.bincount(predicted, minlength=len(self.predicted))
        if asked is not None:
            asked = asked.to(self.asked.device)
            self.asked += torch.bincount(asked, minlength=len(self.asked))
            if predicted is not None:
                self.correct += torch.bincount(asked[predicted == asked], minlength=len(self.correct))

    def compute(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.predicted, self.asked, self.correct
