"""`genlab-train` end to end as users run it: the default job, its run folder, and one-line errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from genlab import training
from genlab.run.layout import METRICS_FILE

# A few batches, two epochs: every artefact of a real run is written, quickly.
QUICK = ["debug=limit"]


def test_default_job_leaves_a_complete_run_folder(genlab_train, monkeypatch) -> None:
    checked = []
    real_check = training.plain_gpu_check_without_a_gpu
    monkeypatch.setattr(training, "plain_gpu_check_without_a_gpu", lambda: checked.append(real_check()))
    run = genlab_train().check()
    assert checked, "genlab-train leaves Lightning's per-call NVML check on where there is no GPU"
    folder = run.dir
    assert (folder / ".hydra" / "config.yaml").is_file()
    assert (folder / "checkpoints" / "last.ckpt").is_file()
    (best,) = (folder / "checkpoints").glob("best-*.ckpt")
    assert list((folder / "tensorboard").glob("events.out.tfevents.*"))
    for name in ("samples", "reconstructions", "interpolation"):
        assert (folder / "samples" / f"{name}.png").is_file()
    assert list((folder / "samples").glob("epoch_*_samples.png")), "no pictures written during training"

    metrics = run.metrics
    assert metrics["judged_metric"] == "val/elbo"
    assert metrics["judged_mode"] == "min"
    assert metrics["checkpoint"] == str(best.relative_to(folder))
    for name in (
        "val/elbo",
        "val/recon",
        "val/kl",
        "val/bpd",
        "test/elbo",
        "test/nll_iwae",
        "test/active_units",
    ):
        assert math.isfinite(metrics[name]), name
    # metrics.json describes the best checkpoint: its val/elbo is the score the checkpoint was chosen by.
    state = torch.load(best, map_location="cpu", weights_only=False)
    (checkpoint_state,) = [v for k, v in state["callbacks"].items() if k.startswith("ModelCheckpoint{'monitor': 'val")]
    assert metrics["val/elbo"] == pytest.approx(float(checkpoint_state["best_model_score"]), rel=1e-6)
    # The ELBO is recon + KL, and bits/dim is the same number in other units (8x8 digits: 64 dims).
    assert metrics["test/elbo"] == pytest.approx(metrics["test/recon"] + metrics["test/kl"], rel=1e-5)
    assert metrics["test/bpd"] == pytest.approx(metrics["test/elbo"] / (64 * math.log(2)), rel=1e-5)
    assert metrics["test/nll_iwae"] <= metrics["test/elbo"]
    # 20 epochs on digits learn something: well below the 64 * ln 2 = 44 nats of a coin per pixel.
    assert metrics["test/elbo"] < 35
    assert "final metrics of the best checkpoint" in run.stdout
    assert "Tip" not in run.stdout and "Tip" not in (folder / "train.log").read_text(), "Lightning's litlogger tip"

    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["error"] is None
    assert manifest["seed"] == 0 and manifest["command"] == "genlab-train"
    assert manifest["started_at"] <= manifest["ended_at"]
    assert manifest["versions"]["torch"] == torch.__version__.split("+")[0]
    assert manifest["git_commit"] is None, "the scratch folder is not a git repository"


def test_help_and_cfg_job(genlab_train) -> None:
    run = genlab_train("--help").check()
    assert "genlab-train: train a generative model" in run.stdout
    assert "model/net: bert, conv, dcgan, gpt, hf, hf_masked, mlp, mlp_gan, unet" in run.stdout
    assert "model: diffusion, gan, masked_lm, transformer, vae" in run.stdout
    run = genlab_train("--cfg", "job", "experiment=vae_mnist").check()
    assert "_target_: genlab.nets.conv.ConvEncoderDecoder" in run.stdout
    assert not run.new_dirs, "--cfg job must not create a run folder"


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


BAD_INPUTS = {
    "unknown config key": (["model.latnt_dim=3"], "Could not override 'model.latnt_dim': no such setting"),
    "unknown group option": (["model=vea"], "Could not find 'model/vea'"),
    "missing dataset offline": (
        ["data=mnist", "paths.data_dir=${hydra:runtime.cwd}/empty", "data.download=false"],
        "mnist is not in",
    ),
    "conv net on a shape it cannot take": (
        ["model/net=conv", "model.net.channels=[8,8,8,8]"],
        "do not divide by 16",
    ),
    "mlp net without layers": (
        ["model/net=mlp", "model.net.hidden_dims=[]"],
        "model.net.hidden_dims=[] is not allowed: expected a non-empty list",
    ),
    "negative beta": (["model.beta=-1"], "model.beta=-1 is not allowed: expected a number >= 0"),
    "missing checkpoint to start from": (["ckpt_path=nowhere.ckpt"], "ckpt_path=nowhere.ckpt is not a file"),
    "corrupt checkpoint": (["ckpt_path=corrupt.ckpt"], "ckpt_path=corrupt.ckpt is not a readable checkpoint"),
    "unknown model setting": (["+model.latent_size=3"], "no setting latent_size (did you mean latent_dim?); VAE takes"),
    "unknown net setting": (["+model.net.depth=3"], "model.net has no setting depth; MLPEncoderDecoder takes"),
}


def test_bad_input_is_one_clear_line_and_leaves_earlier_runs_alone(genlab_train) -> None:
    earlier = genlab_train(*QUICK).check().dir
    corrupt = genlab_train.log_dir.parent / "corrupt.ckpt"  # the working folder of the runs
    corrupt.write_bytes((earlier / "checkpoints" / "last.ckpt").read_bytes()[:1000])  # a truncated checkpoint
    before = snapshot(earlier)
    for case, (overrides, message) in BAD_INPUTS.items():
        run = genlab_train(*overrides)
        assert run.returncode != 0, case
        assert "Traceback" not in run.stderr, f"{case}:\n{run.stderr}"
        assert message in run.stderr, f"{case}: {message!r} not in\n{run.stderr}"
        first_line = next(line for line in run.stderr.splitlines() if message in line)
        assert len(first_line) < 600, f"{case}: error line too long: {first_line}"
        assert not any((d / METRICS_FILE).exists() for d in run.new_dirs), case
        for folder in run.new_dirs:  # runs that got as far as a folder record how they failed
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["status"] == "failed" and message in manifest["error"], case
    assert snapshot(earlier) == before
