"""Inpainting quality at test time: an `Inpainter` completes held-out test images under standard masks, scored
against the originals. Off by default (`callbacks.inpainting.enabled=true`): completing costs the model's sampler
on every image, and more for RePaint's resampling."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torchmetrics.image.fid import FrechetInceptionDistance

from genlab.callbacks.media import log_image, save_grid
from genlab.callbacks.sample_quality import PrecomputedFeatures
from genlab.data.masks import masked_view, standard_mask
from genlab.metrics.feature_classifier import FeatureClassifier, load_or_train
from genlab.metrics.inpainting import masked_mse
from genlab.models.contracts import Inpainter, conditioning_of
from genlab.settings import PositiveInt


class InpaintingQuality(pl.Callback):
    """After the test epoch, for each of `masks` (genlab.data.masks: centre, bottom, boxes), the first `num_images`
    test images completed with `options` (the model's inpainting settings, e.g. {steps: 20, resamplings: 2}) from
    `seed`; logged as `test/inpaint_<mask>_mse` (masked pixels, values in [0, 1]), `_fid` (completions against the
    originals, in the features of genlab's digit/feature classifier: the sample-quality callback's), `_label_acc`
    (how often the classifier still sees the image's label: does the repair keep the digit?) and `_seconds`
    (per image). A conditional model is told the images' labels. Pictures: rows of masked input, completion,
    original, in `samples/inpainting_<mask>.png` and the loggers.
    """

    def __init__(
        self,
        dirpath: str,
        cache_dir: str,
        enabled: bool = False,
        masks: tuple[str, ...] = ("centre", "bottom"),
        num_images: PositiveInt = 256,
        batch_size: PositiveInt = 256,
        options: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> None:
        self.dirpath = Path(dirpath)
        self.cache_dir = cache_dir
        self.enabled = enabled
        self.masks = tuple(masks)
        self.num_images = num_images
        self.batch_size = batch_size
        self.options = dict(options or {})
        self.seed = seed

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        splits = getattr(trainer.datamodule, "splits", None)
        if not self.enabled or not isinstance(pl_module, Inpainter) or not splits or pl_module.spec.num_classes is None:
            return
        classifier = load_or_train(pl_module.spec, splits["train"], splits["test"], self.cache_dir).net
        classifier.to(pl_module.device)
        images, labels = splits["test"][torch.arange(min(self.num_images, len(splits["test"])))]
        for name in self.masks:
            values, picture = self.score(pl_module, classifier, images, labels, name)
            pl_module.log_dict(values, sync_dist=False)
            if trainer.is_global_zero:
                grid = save_grid(picture, 3, self.dirpath / f"inpainting_{name}.png")
                log_image(trainer.loggers, f"inpainting_{name}", grid, trainer.global_step)

    @torch.no_grad()
    def score(
        self,
        model: Any,
        classifier: FeatureClassifier,
        images: torch.Tensor,
        labels: torch.Tensor,
        name: str,
    ) -> tuple[dict[str, float], torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        mask = standard_mask(name, len(images), *images.shape[-2:], generator).to(model.device)
        given = conditioning_of(model).enabled
        fid = FrechetInceptionDistance(feature=PrecomputedFeatures(classifier.num_features)).to(model.device)
        errors, shown, hits, start = [], [], 0, time.perf_counter()
        for first in range(0, len(images), self.batch_size):
            rows = slice(first, first + self.batch_size)
            x, y = images[rows].to(model.device), labels[rows].to(model.device)
            done = model.inpaint(x, mask[rows], generator, y if given else None, **self.options)
            errors.append(masked_mse(done, x, mask[rows]))
            shown = shown or [done[:8].cpu()]
            features = classifier.features(done)
            hits += int((classifier.head(features).argmax(1) == y).sum())
            fid.update(features, real=False)
            fid.update(classifier.features(x), real=True)
        seconds = (time.perf_counter() - start) / len(images)
        values = {
            f"test/inpaint_{name}_mse": float(torch.cat(errors).mean()),
            f"test/inpaint_{name}_fid": float(fid.compute()),
            f"test/inpaint_{name}_label_acc": hits / len(images),
            f"test/inpaint_{name}_seconds": seconds,
        }
        first = slice(0, len(shown[0]))
        picture = torch.stack([masked_view(images[first], mask[first].cpu()), shown[0], images[first]], 1)
        return values, picture.flatten(0, 1)
