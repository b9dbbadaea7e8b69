"""FID and KID between a model's samples and held-out real images, how evenly the samples cover the classes, and
for class-conditional models how often a sample shows the class it was asked for."""

from __future__ import annotations

import math
import warnings
from typing import Annotated, Any, Literal

import pytorch_lightning as pl
import torch
from annotated_types import Ge
from pytorch_lightning.utilities import rank_zero_info
from torch import nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from genlab.callbacks.media import log_histogram
from genlab.errors import ConfigError
from genlab.interrupts import stop_if_requested
from genlab.metrics.class_counts import ClassCounts
from genlab.metrics.feature_classifier import FeatureClassifier, load_or_train, require_labels
from genlab.metrics.inception import InceptionFeatures
from genlab.metrics.intra_fid import IntraFID
from genlab.models.conditioning import balanced_labels
from genlab.models.contracts import ImageGenerator, conditioning_of
from genlab.settings import PositiveInt

AtLeastTwo = Annotated[int, Ge(2)]
#: How often val/fid is computed by default when nothing selects by it (a checkpoint or early stopping that
#: monitors it gets it every epoch): on the pytorch/examples VAE it added about 40% to each epoch.
UNWATCHED_EVERY_N_EPOCHS = 5
#: The per-epoch values this callback logs, which a checkpoint or early stopping may watch.
VALIDATION_METRICS = ("val/fid", "val/cond_acc")


def validation_cadence(every_n_epochs: int | None, callbacks: list[pl.Callback]) -> int:
    """Every how many epochs val/fid is computed: as set, else every epoch when one of `callbacks` (a checkpoint,
    early stopping) selects by one of this callback's validation metrics, else every 5th."""
    if every_n_epochs is not None:
        return every_n_epochs
    watched = {getattr(callback, "monitor", None) for callback in callbacks}
    return 1 if watched.intersection(VALIDATION_METRICS) else UNWATCHED_EVERY_N_EPOCHS


class PrecomputedFeatures(nn.Identity):
    """The `feature` module handed to torchmetrics: features are computed once per batch by the callback and shared
    by FID, KID and the class histogram, instead of each metric running the feature net again."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features


class SampleQuality(pl.Callback):
    """Logs `val/fid` every `every_n_epochs` validation epochs (default: every epoch when a checkpoint or early stopping
    selects by it, else every 5th) and `test/fid`, `test/kid`, `test/kid_std`, `test/class_entropy` when testing, for
    models with `sample(n, generator)`; other models are left alone.

    Real images: the first `num_real` of the split being evaluated (fewer when the split or `limit_*_batches` has
    fewer); their features are computed once per run for validation, since the split does not change. Fakes: `num_fake`
    samples drawn from the same seeded noise every time, so `val/fid` depends on the weights only. Features: the
    penultimate layer of a small classifier trained once on the train split and cached in `cache_dir` ("classifier"), or
    Inception-v3 from a local weights file ("inception"). FID is the Frechet distance between Gaussians fitted to the
    two feature sets; KID the unbiased squared MMD with a cubic polynomial kernel, averaged over 100 random subsets of
    `kid_subset_size` images. Under DDP each process draws its share of both sets and torchmetrics gathers the
    statistics. `class_entropy` is the entropy (nats, at most ln(classes)) of the classes the classifier predicts for
    the fakes: low values mean missing modes.

    Class-conditional models (`model.conditional=true`) are asked for labels spread evenly over the classes (the
    same every time), and FID, KID and class entropy are computed on those class-balanced samples, so conditional
    and unconditional runs compare on one scale. `val/cond_acc` and `test/cond_acc` are the fraction of fakes the
    classifier assigns to the class they were generated for; `summary()` adds the test split's accuracy per class.
    On the test split they also get `test/intra_fid` (FID within each class, averaged over the classes) and
    `test/class_spread` (generated over real feature variance within a class, averaged: near 0 when a class
    collapses to one image), both per class in `summary()` (genlab.metrics.intra_fid).
    """

    def __init__(
        self,
        num_real: AtLeastTwo = 1000,
        num_fake: AtLeastTwo = 1000,
        features: Literal["classifier", "inception"] = "classifier",
        inception_weights: str | None = None,
        kid_subset_size: AtLeastTwo = 100,
        every_n_epochs: PositiveInt | None = None,
        seed: int = 0,
        cache_dir: str = ".cache/genlab",
        batch_size: PositiveInt = 500,
    ) -> None:
        self.num_real = num_real
        self.num_fake = num_fake
        self.features = features
        self.kid_subset_size = kid_subset_size
        self.every_n_epochs = every_n_epochs
        self.val_every_n_epochs = every_n_epochs or UNWATCHED_EVERY_N_EPOCHS  # settled in setup()
        self.val_reals_ready = False
        self.seed = seed
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        # Built here, before any data is loaded, so a missing weights file fails the run at once.
        self.inception = InceptionFeatures(inception_weights) if features == "inception" else None
        self.classifier: FeatureClassifier | None = None
        self.classifier_accuracy: float | None = None
        self.active = False
        self.metrics: dict[str, list[FrechetInceptionDistance | KernelInceptionDistance]] = {}
        self.measuring = False
        self.real_left = 0
        self.counts: dict[str, int] = {}
        self.class_histogram: list[int] | None = None
        self.class_accuracy: list[float] | None = None
        self.intra: IntraFID | None = None
        self.class_counts = ClassCounts(0, None)  # sized in setup()
        self.per_class: dict[str, list[float]] = {}

    # -- set-up -----------------------------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.active or not isinstance(pl_module, ImageGenerator):
            return
        spec = pl_module.spec
        self.val_every_n_epochs = validation_cadence(self.every_n_epochs, trainer.callbacks)
        if self.features == "classifier":
            require_labels(spec)
        if spec.num_classes is not None:
            # Building nets draws initial weights: keep that off the training random stream, so a run does not
            # depend on whether the classifier was cached (nor does a resumed run).
            with torch.random.fork_rng(devices=[]):
                self._load_classifier(trainer, spec)
        dim = self.inception.num_features if self.inception is not None else self.classifier.num_features
        with warnings.catch_warnings():  # that KID keeps its features in memory: a few MB here
            warnings.simplefilter("ignore", UserWarning)
            kid = KernelInceptionDistance(feature=PrecomputedFeatures(dim), subset_size=self.kid_subset_size)
        num_classes = conditioning_of(pl_module).num_classes
        self.intra = IntraFID(num_classes, dim) if num_classes is not None else None
        self.class_counts = ClassCounts(self.classifier.head.out_features if self.classifier else 0, num_classes)
        self.metrics = {
            "val": [FrechetInceptionDistance(feature=PrecomputedFeatures(dim), reset_real_features=False)],
            "test": [FrechetInceptionDistance(feature=PrecomputedFeatures(dim)), kid],
        }
        self.active = True

    def _load_classifier(self, trainer: pl.Trainer, spec: Any) -> None:
        """Rank 0 trains (or loads) the classifier and sends it to the others, so every process has the same net
        whether or not the cache folder is shared between machines."""
        splits = getattr(trainer.datamodule, "splits", None)
        if not splits or "train" not in splits or "test" not in splits:
            raise ConfigError(
                "metrics=sample_quality needs an image datamodule holding train/test splits in memory "
                "(genlab.data.image_datamodule.ImageDataModule); use metrics=none for other data"
            )
        payload = None
        if trainer.is_global_zero:
            loaded = load_or_train(spec, splits["train"], splits["test"], self.cache_dir, device="cpu")
            how = "trained and cached in" if loaded.trained else "loaded from"
            rank_zero_info(
                f"Sample quality: feature classifier for {spec.name} {how} {loaded.path}; "
                f"test accuracy {loaded.accuracy:.4f}"
            )
            payload = (loaded.net.state_dict(), loaded.accuracy)
        state, self.classifier_accuracy = trainer.strategy.broadcast(payload, src=0)
        self.classifier = FeatureClassifier(spec.shape[0], spec.num_classes)
        self.classifier.load_state_dict(state)
        self.classifier.eval().requires_grad_(False)

    # -- one evaluation -----------------------------------------------------------------------------------------------

    def _start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        fitting = trainer.state.fn == "fit"
        due = not fitting or (trainer.current_epoch + 1) % self.val_every_n_epochs == 0
        self.measuring = self.active and not trainer.sanity_checking and due
        if not self.measuring:
            return
        for metric in self.metrics[stage]:
            metric.reset()  # validation keeps its real features (reset_real_features=False)
            metric.to(pl_module.device)
        self.class_counts.reset()
        self.class_counts.to(pl_module.device)
        if self.intra is not None and stage == "test":
            self.intra.reset()
            self.intra.to(pl_module.device)
        for net in (self.classifier, self.inception):
            if net is not None:
                net.to(pl_module.device)
        reals_kept = stage == "val" and self.val_reals_ready
        self.real_left = 0 if reals_kept else max(1, self.num_real // trainer.world_size)

    @torch.no_grad()
    def _features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(features, predicted classes or None) of float images in [0, 1]."""
        images = images.float()
        predicted = None
        if self.classifier is not None:
            features = self.classifier.features(images)
            predicted = self.classifier.head(features).argmax(1)
        if self.inception is not None:
            features = self.inception(images)
        return features, predicted

    def _add_real(self, stage: str, batch: Any) -> None:
        if not self.measuring or self.real_left <= 0:
            return
        images = batch[0][: self.real_left]
        self.real_left -= len(images)
        features, _ = self._features(images)
        for metric in self.metrics[stage]:
            metric.update(features, real=True)
        if self.intra is not None and stage == "test":
            self.intra.update(features, batch[1][: len(images)], real=True)

    @torch.no_grad()
    def _add_fakes(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """This process's share of fakes, from noise seeded by `seed` + rank, into the stage's metrics and the
        class counts (`self.class_counts`)."""
        generator = torch.Generator().manual_seed(self.seed + trainer.global_rank)
        share = max(1, self.num_fake // trainer.world_size)
        num_classes = conditioning_of(pl_module).num_classes
        labels = None if num_classes is None else balanced_labels(share, num_classes, start=share * trainer.global_rank)
        asked = None
        was_training = pl_module.training
        pl_module.eval()
        try:
            for start in range(0, share, self.batch_size):
                stop_if_requested()
                size = min(self.batch_size, share - start)
                if labels is None:
                    images = pl_module.sample(size, generator=generator)
                else:
                    asked = labels[start : start + size]
                    images = pl_module.sample(size, generator=generator, labels=asked)
                features, predicted = self._features(images)
                for metric in self.metrics[stage]:
                    metric.update(features, real=False)
                self.class_counts.update(predicted, asked)
                if self.intra is not None and stage == "test":
                    self.intra.update(features, asked, real=False)
        finally:
            pl_module.train(was_training)

    def _total(self, trainer: pl.Trainer, pl_module: pl.LightningModule, value: torch.Tensor) -> torch.Tensor:
        """Sum over processes (a no-op on one device)."""
        return trainer.strategy.reduce(value.to(pl_module.device), reduce_op="sum").cpu()

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if not self.measuring:
            return
        self.measuring = False
        self._add_fakes(trainer, pl_module, stage)
        histogram, asked, correct = (counts.cpu() for counts in self.class_counts.compute())
        fid = self.metrics[stage][0]
        self.val_reals_ready = self.val_reals_ready or stage == "val"
        num_real = int(self._total(trainer, pl_module, fid.real_features_num_samples.clone()))
        num_fake = int(self._total(trainer, pl_module, fid.fake_features_num_samples.clone()))
        self.counts.update({f"num_real_{stage}": num_real, "num_fake": num_fake})
        values = {f"{stage}/fid": fid.compute()}
        if len(asked):
            values[f"{stage}/cond_acc"] = correct.sum().double() / asked.sum()
            if stage == "test":
                self.class_accuracy = (correct.double() / asked.clamp(min=1)).tolist()
        if self.intra is not None and stage == "test":
            fid_per_class, spread_per_class = self.intra.compute()
            values["test/intra_fid"] = fid_per_class.nanmean()
            values["test/class_spread"] = spread_per_class.nanmean()
            self.per_class = {
                "intra_fid_per_class": fid_per_class.tolist(),
                "spread_per_class": spread_per_class.tolist(),
            }
        if stage == "test":
            kid = self.metrics[stage][1]
            kid.subset_size = min(self.kid_subset_size, num_real, num_fake)
            self.counts["kid_subset_size"] = kid.subset_size
            with torch.random.fork_rng(devices=[]):  # the same random subsets every time
                torch.manual_seed(self.seed)
                values["test/kid"], values["test/kid_std"] = kid.compute()
            if len(histogram):
                probabilities = histogram.double() / histogram.sum()
                values["test/class_entropy"] = torch.special.entr(probabilities).sum()
                self.class_histogram = histogram.tolist()
                log_histogram(trainer.loggers, "test/class_histogram", histogram, trainer.global_step)
        for name, value in values.items():
            pl_module.log(name, value.float(), sync_dist=True)

    # -- Lightning hooks ----------------------------------------------------------------------------------------------

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add_real("val", batch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "val")

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start(trainer, pl_module, "test")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._add_real("test", batch)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish(trainer, pl_module, "test")

    def summary(self) -> dict[str, Any]:
        """What metrics.json records beside the numbers: features, sample counts, classifier accuracy, histogram."""
        if not self.active:
            return {}
        content: dict[str, Any] = {"features": self.features, **self.counts}
        if self.classifier_accuracy is not None:
            content["classifier_test_accuracy"] = self.classifier_accuracy
            content["max_class_entropy"] = math.log(self.classifier.head.out_features)
        if self.class_histogram is not None:
            content["class_histogram"] = self.class_histogram
        if self.class_accuracy is not None:
            content["cond_acc_per_class"] = self.class_accuracy
        content.update(self.per_class)
        return {"sample_quality": content}
