"""At test: does the model copy its training data? The statistics of `genlab.metrics.memorization`, for images in
pixel space and in the FID feature space, for text and music as verbatim n-grams, logged as `test/memorization_*`
and `test/copy_*` (so they reach metrics.json beside the sample quality)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info

from genlab.callbacks.media import log_image, save_grid
from genlab.callbacks.sample_quality import SampleQuality
from genlab.data.image_datamodule import ImageDataModule
from genlab.data.sequences import SequenceDataModule
from genlab.data.text import TextDataModule
from genlab.metrics.memorization import (
    NgramIndex,
    copy_ratios,
    image_memorization,
    nearest,
    padded_ngram_hashes,
    text_copying,
)
from genlab.models.conditioning import balanced_labels
from genlab.models.contracts import ImageGenerator, SequenceGenerator, conditioning_of
from genlab.settings import NonNegativeInt, PositiveFloat, PositiveInt, UnitFraction

#: The picture of the most-copied samples, in the samples folder.
PICTURE = "memorization.png"


class Memorization(pl.Callback):
    """Scores the model's samples for copying once, at test (rank 0; the numbers are logged on every process).

    Images (`num_samples` drawn from seed `seed`; 0 turns images off): `num_reference` training images (a seeded
    random subset) and as many held-out test images are the references. Per space (`pixels`, and `features` when
    the sample-quality metrics run with their feature net), `test/memorization_closer_to_train_<space>`,
    `test/memorization_near_copy_share_<space>` (near-copy: distance ratio below `threshold`, over `neighbours`
    nearest training images) and `test/memorization_data_copying_ct_<space>` (Meehan et al.'s C_T over `cells`
    k-means cells; negative: copying). A picture of the `drawn` most-copied samples (top row) above their nearest
    training images (bottom row) goes to the loggers and to `samples/memorization.png`.

    Text and music (`text_samples` samples; 0 turns them off): `test/copy_ngram_share` (the share of generated
    `ngram`-token windows found in the training tokens) and `test/copy_longest_span` (tokens). Running text is
    sampled as `text_length` tokens after the held-out text's first token; whole sequences (molecules, music)
    to their end token.
    """

    def __init__(
        self,
        dirpath: str,
        num_samples: NonNegativeInt = 500,
        num_reference: PositiveInt = 1000,
        threshold: UnitFraction = 1 / 3,
        neighbours: PositiveInt = 50,
        cells: PositiveInt = 5,
        drawn: NonNegativeInt = 8,
        ngram: PositiveInt = 16,
        text_samples: NonNegativeInt = 16,
        text_length: PositiveInt = 256,
        temperature: PositiveFloat = 1.0,
        batch_size: PositiveInt = 500,
        seed: int = 0,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.num_samples = num_samples
        self.num_reference = num_reference
        self.threshold = threshold
        self.neighbours = neighbours
        self.cells = cells
        self.drawn = drawn
        self.ngram = ngram
        self.text_samples = text_samples
        self.text_length = text_length
        self.temperature = temperature
        self.batch_size = batch_size
        self.seed = seed
        self.counts: dict[str, Any] = {}

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        started = time.perf_counter()
        values = self._scores(trainer, pl_module) if trainer.is_global_zero else None
        if values:
            self.counts["seconds"] = round(time.perf_counter() - started, 3)  # what it cost, sampling included
        values = trainer.strategy.broadcast(values, src=0)
        for name, value in values.items():
            pl_module.log(f"test/{name}", float(value), sync_dist=True)
        if values and trainer.is_global_zero:
            rank_zero_info("Memorization: " + ", ".join(f"{name} {value:.3f}" for name, value in values.items()))

    def _scores(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        datamodule = trainer.datamodule
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.no_grad():
                if isinstance(pl_module, ImageGenerator) and isinstance(datamodule, ImageDataModule):
                    return self._image_scores(trainer, pl_module, datamodule) if self.num_samples else {}
                if isinstance(pl_module, SequenceGenerator) and self.text_samples:
                    index = training_index(datamodule, self.ngram)
                    return self._text_scores(pl_module, datamodule, index) if index is not None else {}
                return {}
        finally:
            pl_module.train(was_training)

    # -- images -------------------------------------------------------------------------------------------------------

    def _image_scores(
        self, trainer: pl.Trainer, pl_module: ImageGenerator, datamodule: ImageDataModule
    ) -> dict[str, float]:
        train, test = datamodule.splits["train"], datamodule.splits["test"]
        count = min(self.num_reference, len(train), len(test))
        generator = torch.Generator().manual_seed(self.seed)
        chosen = torch.randperm(len(train), generator=generator)[:count]
        references = {"train": train.images[chosen].float() / 255, "heldout": test.images[:count].float() / 255}
        generated = self._generate(pl_module, generator).cpu().float()
        spaces = {"pixels": lambda images: images}
        quality = next((c for c in trainer.callbacks if isinstance(c, SampleQuality) and c.active), None)
        if quality is not None:
            spaces["features"] = lambda images: batched_features(quality, images, pl_module.device, self.batch_size)
        values: dict[str, float] = {}
        for space, features_of in spaces.items():
            train_f, heldout_f, generated_f = map(features_of, (references["train"], references["heldout"], generated))
            scores = image_memorization(
                generated_f, train_f, heldout_f, self.threshold, self.neighbours, self.cells, self.seed
            )
            values.update({f"memorization_{name}_{space}": value for name, value in scores.items()})
        self.counts.update({"num_generated": len(generated), "num_train_reference": count, "num_heldout": count})
        self.counts["spaces"] = list(spaces)
        if self.drawn:
            self._draw(trainer, generated, references["train"])
        return values

    def _generate(self, pl_module: ImageGenerator, generator: torch.Generator) -> torch.Tensor:
        num_classes = conditioning_of(pl_module).num_classes
        labels = None if num_classes is None else balanced_labels(self.num_samples, num_classes)
        images = []
        for start in range(0, self.num_samples, self.batch_size):
            size = min(self.batch_size, self.num_samples - start)
            if labels is None:
                images.append(pl_module.sample(size, generator=generator))
            else:
                images.append(pl_module.sample(size, generator=generator, labels=labels[start : start + size]))
        return torch.cat(images)

    def _draw(self, trainer: pl.Trainer, generated: torch.Tensor, train: torch.Tensor) -> None:
        """The most-copied samples (pixel space) above their nearest training images."""
        ratios = copy_ratios(nearest(generated, train, self.neighbours))
        most = ratios.argsort()[: self.drawn]
        closest = torch.cdist(generated[most].flatten(1), train.flatten(1)).argmin(1)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        grid = save_grid(torch.cat([generated[most], train[closest]]), len(most), self.dirpath / PICTURE)
        log_image(trainer.loggers, "test/memorization", grid, trainer.global_step)

    # -- text and music -----------------------------------------------------------------------------------------------

    def _text_scores(self, pl_module: SequenceGenerator, datamodule: Any, index: NgramIndex) -> dict[str, float]:
        generator = torch.Generator(device=pl_module.device).manual_seed(self.seed)
        tokenizer = pl_module.tokenizer
        if pl_module.whole_sequences:
            texts = pl_module.generate_sequences(self.text_samples, self.temperature, generator=generator)
            generated = [torch.tensor(tokenizer.ids(tokenizer.split(text))) for text in texts]
        else:  # prompted with the held-out text's first token (one the vocabulary has; no training text)
            prompt = tokenizer.decode(datamodule.tokens["val"][:1].tolist())
            texts = [
                pl_module.generate_text(prompt, self.text_length, self.temperature, generator=generator)
                for _ in range(self.text_samples)
            ]
            generated = [torch.tensor(tokenizer.encode(text)) for text in texts]
        scores = text_copying(index, generated)
        self.counts.update({"num_generated": len(generated), "ngram": self.ngram, "training_ngrams": len(index)})
        return {"copy_ngram_share": scores["ngram_copy_share"], "copy_longest_span": scores["longest_copied_span"]}

    def summary(self) -> dict[str, Any]:
        """What metrics.json records beside the numbers: the counts and settings behind them."""
        if not self.counts:
            return {}
        settings = {"threshold": self.threshold, "neighbours": self.neighbours, "cells": self.cells}
        return {"memorization": {**self.counts, **settings}}


def batched_features(quality: SampleQuality, images: torch.Tensor, device: torch.device, size: int) -> torch.Tensor:
    """The features FID is computed on by the sample-quality callback (its Inception net, else its classifier's
    penultimate layer) of images in [0, 1], on the CPU."""
    features = quality.inception if quality.inception is not None else quality.classifier.features
    return torch.cat([features(part.to(device).float()).cpu() for part in images.split(size)])


def training_index(datamodule: Any, n: int) -> NgramIndex | None:
    """The n-gram index of the training tokens: the running text whole, or each sequence without its begin and end
    tokens; None for data of another kind."""
    if isinstance(datamodule, TextDataModule):
        return NgramIndex.of_sequences([datamodule.tokens["train"]], n)
    if isinstance(datamodule, SequenceDataModule):
        dataset = datamodule.datasets["train"]
        return NgramIndex(padded_ngram_hashes(dataset.tokens[:, 1:], dataset.lengths - 2, n), n)
    return None
