"""What the metrics of generated whole sequences (molecules, music) share: checking that data and model fit, drawing
the samples from a fixed seed, scoring them on rank 0 and logging the same numbers on every process."""

from __future__ import annotations

from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from genlab.errors import ConfigError
from genlab.models.contracts import SequenceGenerator


class GeneratedSequenceMetrics(pl.Callback):
    """Generates `num_samples[split]` whole sequences after every validation epoch and at test (none when 0),
    always from the same seed, so a metric depends on the weights alone, and logs what `_scores` makes of them as
    `<split>/<name>`. Subclasses name their metrics group, the data they score and how to announce test results."""

    #: For the one-line errors: the metrics option, which is also what it scores (`metrics=music`: music), and the
    #: data options to use.
    option: ClassVar[str]
    data_options: ClassVar[str]

    def __init__(
        self, num_samples: int, num_val_samples: int, temperature: float, top_k: int | None, batch_size: int, seed: int
    ) -> None:
        self.num_samples = {"val": num_val_samples, "test": num_samples}
        self.temperature = temperature
        self.top_k = top_k
        self.batch_size = batch_size
        self.seed = seed

    def data_class(self) -> type:
        """The datamodule class these metrics score (imported late: the optional extras live behind it)."""
        raise NotImplementedError

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not isinstance(trainer.datamodule, self.data_class()):
            raise ConfigError(
                f"metrics={self.option} scores generated {self.option}, but the data is not {self.option}; "
                f"use {self.data_options}, or metrics=none"
            )
        if not (isinstance(pl_module, SequenceGenerator) and pl_module.whole_sequences):
            raise ConfigError(
                f"metrics={self.option} needs a model that generates whole sequences: use model=transformer"
            )

    @torch.no_grad()
    def _generate(self, pl_module: pl.LightningModule, n: int) -> list[str]:
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        was_training = pl_module.training
        pl_module.eval()
        try:
            return pl_module.generate_sequences(
                n, self.temperature, top_k=self.top_k, generator=generator, batch_size=self.batch_size
            )
        finally:
            pl_module.train(was_training)

    def _scores(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> dict[str, float]:
        """Generate this split's samples and score them (rank 0 only)."""
        raise NotImplementedError

    def _test_line(self, values: dict[str, float]) -> str:
        """The line printed with the test scores."""
        raise NotImplementedError

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        """Rank 0 generates and scores; every process logs the same numbers."""
        if not self.num_samples[split]:
            return
        values = self._scores(trainer, pl_module, split) if trainer.is_global_zero else None
        values = trainer.strategy.broadcast(values, src=0)
        for name, value in values.items():
            pl_module.log(f"{split}/{name}", float(value), sync_dist=True)
        if split == "test" and trainer.is_global_zero:
            rank_zero_info(self._test_line(values))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._measure(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module, "test")

    @staticmethod
    def shown(values: dict[str, Any]) -> str:
        """`name value, ...` with three decimals."""
        return ", ".join(f"{name} {value:.3f}" for name, value in values.items())
