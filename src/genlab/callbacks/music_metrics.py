"""Statistics of a model's generated music against held-out pieces, after every validation epoch and at test; the
first few pieces written as MIDI, MusicXML and piano rolls, and drawn to every logger."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from torchvision.utils import make_grid

from genlab.callbacks.media import log_image
from genlab.callbacks.sequence_metrics import GeneratedSequenceMetrics
from genlab.settings import NonNegativeInt, PositiveFloat, PositiveInt


class MusicMetrics(GeneratedSequenceMetrics):
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

    option = "music"
    data_options = "data=bach_chorales or data=music_folder"

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
        super().__init__(num_samples, num_val_samples, temperature, top_k, batch_size, seed)
        self.dirpath = Path(dirpath)
        self.written = written
        self.references: dict[str, list[Any]] = {}
        self.counts: dict[str, Any] = {}

    def data_class(self) -> type:
        from genlab.data.music import MusicDataModule

        return MusicDataModule

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

    def _test_line(self, values: dict[str, float]) -> str:
        held_out = self.shown(self.counts["reference_test"])
        return f"Music ({self.num_samples['test']} generated): {self.shown(values)}; held-out pieces: {held_out}"

    def summary(self) -> dict[str, Any]:
        """What metrics.json records beside the numbers: the counts, the held-out pieces' own statistics, and the
        sampling settings."""
        if not self.counts:
            return {}
        return {"music_metrics": {**self.counts, "temperature": self.temperature, "top_k": self.top_k}}
