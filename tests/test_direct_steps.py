"""A model that makes its own steps (the GAN; every model at `steps_per_execution` > 1) leaves Lightning's plugins
out of them in a plain fit (genlab.models.direct_steps): through genlab-train, the same hooks are called with the same
values and the weights are the same bit for bit as through Lightning's path, which a profiler keeps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import QUIET_TRAIN
from test_steps_per_execution import assert_same_weights, last_checkpoint

RECORDER = "+callbacks.hooks._target_=hook_recorder.HookRecorder"
LIGHTNING_PATH = "+trainer.profiler=simple"

BASE = [
    "data=digits",
    "data.batch_size=60",
    "trainer.max_steps=8",
    "trainer.limit_val_batches=1",
    "test=false",
    "callbacks.memorization=null",
    "callbacks.samples=null",
    *QUIET_TRAIN,
]
#: Two optimizers, each toggled, stepped and clipped by the model itself, a generator step every second batch.
GAN = [
    "model=gan",
    "model.n_critic=2",
    "model.gradient_clip_val=0.5",
    "metrics.num_real=32",
    "metrics.num_fake=32",
    "metrics.kid_subset_size=16",
]
#: Automatic optimization's work done by the model: accumulation and clipping inside the closure.
VAE = [
    "model=vae",
    "metrics=none",
    "steps_per_execution=2",
    "trainer.accumulate_grad_batches=2",
    "trainer.gradient_clip_val=0.05",
]


def hooks(run_dir: Path) -> dict:
    return json.loads((run_dir / "hooks.json").read_text())


@pytest.mark.parametrize(
    ("model", "global_step"),
    # The GAN's optimizer steps count one each: max_steps=8 is first passed by a D+G batch, at 9.
    [(GAN, 9), (VAE, 8)],
    ids=["gan", "vae-steps-per-execution"],
)
def test_the_direct_path_calls_the_same_hooks_and_trains_the_same(
    genlab_train, model: list[str], global_step: int
) -> None:
    direct = genlab_train(*BASE, *model, RECORDER).check()
    lightning = genlab_train(*BASE, *model, RECORDER, LIGHTNING_PATH).check()
    a, b = hooks(direct.dir), hooks(lightning.dir)
    assert a["direct"] == [True] and b["direct"] == [False]
    kinds = {call[0] for call in a["calls"]}
    assert kinds == {"before_backward", "after_backward", "before_optimizer_step"}
    assert a["calls"] == b["calls"]
    assert_same_weights(last_checkpoint(direct.dir), last_checkpoint(lightning.dir), global_step=global_step)
