"""Statistics of a model's generated music against held-out pieces, after every validation epoch and at test; the
first few pieces written as MIDI, MusicXML and piano rolls, and drawn to every logger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torchvision.utils import make_grid

from genlab.callbacks.media import log_image
from genlab.errors import ConfigError
from genlab.settings import NonNegativeInt, PositiveFloat, PositiveInt


class MusicMetrics(pl.Callback):
    """Generates pieces and compares them with the split's held-out pieces (`genlab.metrics.music`).

    `num_val_samples` after every validation epoch (0: none) and `num_samples` at test, always from the same seed,
    so a metric depends on the weights alone; sampled at `temperature` (1: the model's own distribution) and
    `top_k`. Logged per split: `pitch_class_distance` and `duration_distance` (total variation distance of the
    histograms from the held-out pieces', 0 to 1), `pitch_range` (semitones), `polyphony` (notes sounding
    together), `in_key` (fraction of notes in the piece's estimated key), `notes` (per piece) and
    `invalid_tokens` (the fraction of generated tokens that broke the grammar and were skipped in decoding).
    The held-out pieces' own values are in metrics.json.

    The first `written` pieces go to `dirpath/step_NNNNNN/` during training and `dirpath/best/` at test (MIDI,
    MusicXML, piano-roll PNG), and their piano rolls to the loggers as `val/piano_rolls`, `test/piano_rolls`.

    These statistics describe samples; they do not rank models reliably (copying the training pieces' histograms
    scores perfectly), so music runs stay judged by their model's `val/loss`.
    """

    def __init__(
        self,
        dirpath: str,
        num_samples: PositiveInt = 100,
        num_val_samples: NonNegativeInt = 20,
        temperature: PositiveFloat = 1.0,
        top_k: PositiveInt | None = None,
        batch_size: PositiveInt = 50,
        written: NonNegativeInt = 4,
        seed: int = 0,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.num_samples = {"val": num_val_samples, "test": num_samples}
        self.temperature = temperature
        self.top_k = top_k
        self.batch_size = batch_size
        self.written = written
        self.seed = seed
        self.references: dict[str, list[Any]] = {}
        self.counts: dict[str, Any] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from genlab.data.music import MusicDataModule

        if not isinstance(trainer.datamodule, MusicDataModule):
            raise ConfigError(
                "metrics=music scores generated music, but the data is not music; "
                "use data=bach_chorales or data=music_folder, or metrics=none"
            )
        if not getattr(pl_module, "whole_sequences", False):
            raise ConfigError("metrics=music needs a model that generates whole sequences: use model=transformer")

    def _reference(self, trainer: pl.Trainer, split: str) -> list[Any]:
        """The split's held-out pieces (whole, not cut into excerpts), decoded once."""
        from genlab.data.music_tokens import decode
        from genlab.metrics.music import describe

        if split not in self.references:
            pieces = [decode(text.split()).notes for text in trainer.datamodule.items[split]]
            self.references[split] = pieces
            self.counts[f"num_reference_{split}"] = len(pieces)
            self.counts[f"reference_{split}"] = describe(pieces)
        return self.references[split]

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
        from genlab.data.music import write_pieces
        from genlab.data.music_tokens import decode
        from genlab.data.piano_roll import piano_rolls
        from genlab.metrics.music import compare

        reference = self._reference(trainer, split)
        texts = self._generate(pl_module, self.num_samples[split])
        pieces = [decode(text.split()) for text in texts]
        values = compare([piece.notes for piece in pieces], reference)
        values["invalid_tokens"] = sum(piece.errors for piece in pieces) / max(1, sum(len(t.split()) for t in texts))
        self.counts[f"num_generated_{split}"] = len(pieces)
        shown = pieces[: self.written]
        if shown:
            grid = make_grid(piano_rolls(shown), nrow=1, padding=2, pad_value=1.0)
            log_image(trainer.loggers, f"{split}/piano_rolls", grid, trainer.global_step)
            if split == "test":
                write_pieces(shown, texts[: self.written], self.dirpath / "best")
            elif trainer.state.fn == "fit":
                write_pieces(shown, texts[: self.written], self.dirpath / f"step_{trainer.global_step:06d}")
        return values

    def _measure(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str) -> None:
        """Rank 0 generates and scores; every process logs the same numbers."""
        if not self.num_samples[split]:
            return
        values = self._scores(trainer, pl_module, split) if trainer.is_global_zero else None
        values = trainer.strategy.broadcast(values, src=0)
        for name, value in values.items():
            pl_module.log(f"{split}/{name}", float(value), sync_dist=True)
        if split == "test" and trainer.is_global_zero:
            shown = ", ".join(f"{name} {value:.3f}" for name, value in values.items())
            held_out = ", ".join(f"{name} {value:.3f}" for name, value in self.counts["reference_test"].items())
            rank_zero_info(f"Music ({self.num_samples[split]} generated): {shown}; held-out pieces: {held_out}")

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._measure(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._measure(trainer, pl_module, "test")

    def summary(self) -> dict[str, Any]:
        """What metrics.json records beside the numbers: the counts, the held-out pieces' own statistics, and the
        sampling settings."""
        if not self.counts:
            return {}
        return {"music_metrics": {**self.counts, "temperature": self.temperature, "top_k": self.top_k}}
