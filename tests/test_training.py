"""Training through the real entrypoint: real MNIST learns, DDP on 2 CPU processes, bf16, every logger."""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import pytest
import torch
from conftest import QUIET_TRAIN
from requires import requires_data
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from genlab.callbacks.finite_loss import NonFiniteLossError, StopOnNonFiniteLoss

QUIET = [*QUIET_TRAIN]


def csv_rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return list(csv.DictReader(f))


@requires_data("MNIST/raw")
def test_short_mnist_run_drives_val_elbo_down(genlab_train) -> None:
    run = genlab_train(
        "data=mnist",
        "logger=csv",
        "trainer.max_epochs=3",
        "trainer.limit_train_batches=40",
        "trainer.limit_val_batches=5",
        "trainer.limit_test_batches=2",
        "data.eval_batch_size=250",
        "model.eval_iwae_k=20",
        "callbacks.samples=null",
        "metrics=none",  # FID would first train the MNIST feature classifier (about 35 s); tested elsewhere
        *QUIET,
    ).check()
    val = [float(row["val/elbo"]) for row in csv_rows(run.dir) if row.get("val/elbo")]
    # 3 epochs, then the best checkpoint's validation once more.
    assert len(val) == 4, val
    assert val[0] > val[1] > val[2], val
    assert val[2] < val[0] - 10, f"val/elbo barely moved: {val}"
    # An untrained decoder (p = 0.5 per pixel) costs 784 * ln 2 = 543 nats per image.
    assert val[2] < 250, val
    metrics = run.metrics
    assert metrics["val/elbo"] == pytest.approx(min(val[:3]), rel=1e-6)
    assert metrics["test/nll_iwae"] <= metrics["test/elbo"]
    assert metrics["test/bpd"] == pytest.approx(metrics["test/elbo"] / (784 * math.log(2)), rel=1e-5)


@pytest.mark.parametrize("net", ["mlp", "conv"])
def test_bf16_mixed_precision_on_cpu(genlab_train, net: str) -> None:
    run = genlab_train(
        f"model/net={net}",
        "trainer.precision=bf16-mixed",
        "debug=limit",
        "data.eval_batch_size=64",
        "logger=csv",
        *QUIET,
    ).check()
    metrics = run.metrics
    assert all(math.isfinite(metrics[name]) for name in ("val/elbo", "test/elbo", "test/nll_iwae"))


def test_every_logger_gets_metrics_and_pictures(genlab_train, tmp_path) -> None:
    run = genlab_train("logger=many", "debug=limit", *QUIET, env={"HOME": str(tmp_path)}).check()
    assert any(row.get("val/elbo") for row in csv_rows(run.dir))
    events = EventAccumulator(str(run.dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {"samples/samples", "samples/reconstructions", "samples/interpolation"} <= set(events.Tags()["images"])
    assert "val/elbo" in events.Tags()["scalars"]
    (wandb_run,) = (run.dir / "wandb").glob("offline-run-*")
    assert list(wandb_run.glob("*.wandb")), "W&B did not record the offline run"
    assert "hparams.yaml" in {p.name for p in (run.dir / "tensorboard").iterdir()}


def test_non_finite_loss_stops_the_run_with_one_clear_line(genlab_train) -> None:
    # A Gaussian scale of 1e-30 squares to an overflow: the loss is infinite from the first step.
    # (Not debug=limit: its anomaly detection would stop the run in backward, before the loss check.)
    limits = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=1"]
    run = genlab_train(*limits, "model.likelihood=gaussian", "model.gaussian_scale=1e-30", *QUIET)
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr
    (line,) = [line for line in run.stderr.splitlines() if "error:" in line]
    assert "train/loss became inf at step 0 (batch 0 of epoch 0)" in line
    manifest = (run.dir / "manifest.json").read_text()
    assert '"status": "failed"' in manifest and "train/loss became inf" in manifest


def test_the_callback_checks_every_backward_pass() -> None:
    callback = StopOnNonFiniteLoss()
    loop = SimpleNamespace(epoch_loop=SimpleNamespace(batch_idx=3))
    trainer = SimpleNamespace(global_step=7, current_epoch=1, fit_loop=loop)
    callback.on_before_backward(trainer, None, torch.tensor(1.0))
    with pytest.raises(NonFiniteLossError, match=r"train/loss became nan at step 7 \(batch 3 of epoch 1\); lower"):
        callback.on_before_backward(trainer, None, torch.tensor(float("nan")))
