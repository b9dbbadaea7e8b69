"""Sample quality: FID/KID on classifier features, the cached feature classifier, and the metrics in metrics.json."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from conftest import QUIET_TRAIN
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

from genlab.callbacks.sample_quality import PrecomputedFeatures, SampleQuality, validation_cadence
from genlab.data.digits import DigitsDataModule
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError
from genlab.metrics.feature_classifier import FEATURE_DIM, load_or_train
from genlab.models.contracts import ImageGenerator

QUIET = [*QUIET_TRAIN, "logger=csv"]


@pytest.fixture(scope="module")
def digits() -> DigitsDataModule:
    datamodule = DigitsDataModule()
    datamodule.setup()
    return datamodule


@pytest.fixture(scope="module")
def classifier_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def features(digits, classifier_cache):
    """Features of float images in [0, 1] from the digits classifier."""
    net = load_or_train(digits.spec, digits.splits["train"], digits.splits["test"], classifier_cache).net
    return lambda images: net.features(images)


def test_classifier_learns_digits_and_is_cached(digits, tmp_path) -> None:
    splits = digits.splits
    first = load_or_train(digits.spec, splits["train"], splits["test"], tmp_path)
    assert first.trained and first.accuracy > 0.8, first.accuracy
    assert first.path.is_relative_to(tmp_path) and not list(first.path.parent.glob(".*.tmp"))
    written = first.path.stat().st_mtime_ns
    second = load_or_train(digits.spec, splits["train"], splits["test"], tmp_path)
    assert not second.trained and second.accuracy == first.accuracy
    assert first.path.stat().st_mtime_ns == written, "a cached classifier was written again"
    images = splits["test"][torch.arange(20)][0]
    assert torch.equal(first.net.features(images), second.net.features(images))
    assert first.net.features(images).shape == (20, FEATURE_DIM)


def test_corrupt_cache_is_retrained(digits, tmp_path) -> None:
    splits = digits.splits
    path = load_or_train(digits.spec, splits["train"], splits["test"], tmp_path).path
    path.write_bytes(b"not a checkpoint")
    again = load_or_train(digits.spec, splits["train"], splits["test"], tmp_path)
    assert again.trained and again.accuracy > 0.8
    assert not load_or_train(digits.spec, splits["train"], splits["test"], tmp_path).trained


def test_unlabelled_data_needs_inception_features(digits, tmp_path) -> None:
    spec = DataSpec(kind="image", shape=(1, 8, 8), name="folder")
    with pytest.raises(ConfigError, match=r"data=folder has none; use metrics.features=inception"):
        load_or_train(spec, digits.splits["train"], digits.splits["test"], tmp_path)
    assert not (tmp_path / "feature_classifier").exists()


def test_frechet_distance_and_kid(digits, features) -> None:
    real = digits.splits["test"][torch.arange(270)][0]
    noise = torch.rand(real.shape, generator=torch.Generator().manual_seed(0))

    def distances(fake: torch.Tensor) -> tuple[float, float]:
        fid = FrechetInceptionDistance(feature=PrecomputedFeatures(FEATURE_DIM))
        kid = KernelInceptionDistance(feature=PrecomputedFeatures(FEATURE_DIM), subset_size=100)
        for metric in (fid, kid):
            metric.update(features(real), real=True)
            metric.update(features(fake), real=False)
        torch.manual_seed(0)
        return float(fid.compute()), float(kid.compute()[0])

    fid_same, kid_same = distances(real)
    fid_noise, kid_noise = distances(noise)
    assert abs(fid_same) < 1e-2 * fid_noise, (fid_same, fid_noise)
    assert fid_noise > 10
    # KID draws its subsets of the two sets independently: near zero, not exactly zero.
    assert abs(kid_same) < 0.05 * kid_noise, (kid_same, kid_noise)


class ReplayModel(pl.LightningModule, ImageGenerator):
    """A stand-in generator whose samples are given images: the callback should rate real digits far above noise."""

    def __init__(self, spec: DataSpec, pool: torch.Tensor) -> None:
        super().__init__()
        self.spec = spec
        self.pool = pool
        self.dummy = torch.nn.Linear(1, 1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.pool[torch.randint(len(self.pool), (n,), generator=generator)].to(self.device)

    def validation_step(self, batch, batch_idx) -> None:
        pass

    def test_step(self, batch, batch_idx) -> None:
        pass


def test_callback_rates_real_images_above_noise(digits, classifier_cache) -> None:
    train = digits.splits["train"][torch.arange(len(digits.splits["train"]))][0]
    noise = torch.rand(train.shape, generator=torch.Generator().manual_seed(0))
    results = {}
    for name, pool in (("real", train), ("noise", noise)):
        callback = SampleQuality(num_real=100, num_fake=300, kid_subset_size=50, cache_dir=str(classifier_cache))
        trainer = pl.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False)
        model = ReplayModel(digits.spec, pool)
        metrics = trainer.validate(model, datamodule=digits, verbose=False)[0]
        metrics.update(trainer.test(model, datamodule=digits, verbose=False)[0])
        results[name] = (metrics, callback.summary()["sample_quality"])
    (real, real_summary), (noisy, _) = results["real"], results["noise"]
    assert real["val/fid"] < 0.2 * noisy["val/fid"] and real["test/fid"] < 0.2 * noisy["test/fid"]
    assert real["test/kid"] < 0.2 * noisy["test/kid"]
    # Real digits cover all ten classes about evenly: entropy close to ln 10.
    assert real["test/class_entropy"] > 0.95 * math.log(10)
    assert real_summary["num_real_val"] == 100 and real_summary["num_real_test"] == 100
    assert real_summary["num_fake"] == 300 and sum(real_summary["class_histogram"]) == 300
    assert real_summary["classifier_test_accuracy"] > 0.8


def test_validation_reals_are_featurized_once_and_unwatched_fid_is_sparse(digits, classifier_cache) -> None:
    """The validation split does not change within a run: its real features are computed once and kept, so a second
    validation gives the same val/fid from the fakes' features alone. val/fid is every 5th epoch unless a
    checkpoint or early stopping selects by it."""
    callback = SampleQuality(num_real=100, num_fake=200, kid_subset_size=50, cache_dir=str(classifier_cache))
    trainer = pl.Trainer(callbacks=[callback], logger=False, enable_progress_bar=False, enable_model_summary=False)
    model = ReplayModel(digits.spec, digits.splits["train"][torch.arange(200)][0])
    first = trainer.validate(model, datamodule=digits, verbose=False)[0]["val/fid"]
    featurized = []
    original = callback.classifier.features
    callback.classifier.features = lambda images: featurized.append(len(images)) or original(images)
    again = trainer.validate(model, datamodule=digits, verbose=False)[0]["val/fid"]
    assert again == pytest.approx(first, rel=1e-6)
    assert sum(featurized) == 200, f"only the 200 fakes should be featurized again, not the reals: {featurized}"
    assert callback.summary()["sample_quality"]["num_real_val"] == 100
    assert callback.val_every_n_epochs == 5
    watched = pl.callbacks.ModelCheckpoint(monitor="val/fid", mode="min")
    unwatched = pl.callbacks.ModelCheckpoint(monitor="val/elbo", mode="min")
    for every, callbacks, expected in ((None, [watched], 1), (None, [unwatched], 5), (3, [], 3), (3, [watched], 3)):
        assert validation_cadence(every, callbacks) == expected, (every, callbacks)


@pytest.mark.parametrize("weights", [None, "missing.pth"])
def test_inception_without_weights_is_one_clear_error(weights) -> None:
    with pytest.raises(ConfigError, match=r"metrics.inception_weights=PATH \(offline there is no download\)") as info:
        SampleQuality(features="inception", inception_weights=weights)
    assert "\n" not in str(info.value)


def test_train_writes_sample_quality_to_metrics_json(genlab_train, tmp_path) -> None:
    fresh_cache = tmp_path / "fresh-cache"
    run = genlab_train("debug=limit", *QUIET[:-1], "logger=tensorboard", env={"GENLAB_CACHE_DIR": str(fresh_cache)})
    run.check()
    metrics = run.metrics
    for name in ("val/fid", "test/fid", "test/kid", "test/kid_std", "test/class_entropy"):
        assert math.isfinite(metrics[name]), name
    assert metrics["test/fid"] > 0
    assert 0 <= metrics["test/class_entropy"] <= math.log(10) + 1e-6
    summary = metrics["sample_quality"]
    # debug=limit measures 64 real (of its two evaluation batches of 64) and 64 generated images (conf/debug/sizes/).
    assert (summary["num_real_val"], summary["num_real_test"], summary["num_fake"]) == (64, 64, 64)
    assert summary["features"] == "classifier" and summary["classifier_test_accuracy"] > 0.8
    assert len(summary["class_histogram"]) == 10 and sum(summary["class_histogram"]) == 64
    assert "feature classifier for digits trained and cached in" in run.stdout + run.stderr
    assert list((fresh_cache / "feature_classifier").glob("digits-1x8x8-*.pt"))
    events = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"histograms": 0})
    events.Reload()
    assert "test/class_histogram" in events.Tags()["histograms"]
    assert {"val/fid", "test/fid", "test/kid"} <= set(events.Tags()["scalars"])


def test_metrics_none_disables_sample_quality(genlab_train) -> None:
    metrics = genlab_train("debug=limit", "metrics=none", *QUIET).check().metrics
    assert not [name for name in metrics if "fid" in name or "kid" in name or name == "sample_quality"]
    assert math.isfinite(metrics["test/elbo"])


def test_inception_without_weights_stops_the_run(genlab_train) -> None:
    run = genlab_train("debug=limit", "metrics.features=inception", *QUIET)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if "error:" in line]
    assert line.startswith("genlab-train: error: metrics.features=inception needs weights")


@pytest.mark.parametrize("cached", [False, True], ids=["trained", "cached"])
def test_setting_up_leaves_the_training_random_stream_alone(digits, tmp_path, cached: bool) -> None:
    """Whether the classifier is trained or read from the cache, training draws the same random numbers after."""
    cache = tmp_path / "cache"
    if cached:
        load_or_train(digits.spec, digits.splits["train"], digits.splits["test"], cache)
    trainer = SimpleNamespace(
        datamodule=digits,
        callbacks=[],
        is_global_zero=True,
        strategy=SimpleNamespace(broadcast=lambda value, src=0: value),
    )
    module = SimpleNamespace(spec=digits.spec, sample=lambda n, generator=None: None)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    SampleQuality(cache_dir=str(cache)).setup(trainer, module, "fit")
    assert torch.equal(torch.get_rng_state(), before)
