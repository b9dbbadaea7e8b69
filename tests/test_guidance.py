"""Class-conditional diffusion with classifier-free guidance: the conditional UNet, label dropout, the guidance rule and
its convention, and a conditional diffusion run through genlab-train, genlab-eval (a sweep of guidance scales that
genlab-compare plots), genlab-sample and resume."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import CELL, QUIET_TRAIN, train_env
from inprocess import Result, call_entrypoint
from PIL import Image
from test_diffusion import TINY_DIFFUSION, digits_diffusion

from genlab.errors import ConfigError
from genlab.models.guidance import drop_labels, guided_prediction
from genlab.nets.unet import UNet

NULL = 10  # the digits' ten classes, then the null label
#: A conditional diffusion model that learns the classes in a few seconds: a 16-channel UNet without attention on a
#: 100-step cosine schedule, no EMA, a high learning rate, whole epochs of the digits; cond_acc on 200 samples.
LEARNING = [
    "model=diffusion",
    "model.conditional=true",
    "model.net.channels=16",
    "model.net.num_res_blocks=1",
    "model.net.attention_resolution=0",
    "model.net.dropout=0",
    "model.schedule=cosine",
    "model.timesteps=100",
    "model.sample_steps=10",
    "model.eval_steps=10",
    "model.bpd_timesteps=3",
    "model.ema_decay=0",
    "model.optimizer.lr=2e-3",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "data.eval_batch_size=200",
    "metrics.num_real=200",
    "metrics.num_fake=200",
    "metrics.kid_subset_size=50",
    *QUIET_TRAIN,
]


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- the net, label dropout and the guidance rule ---------------------------------------------------------------------


def test_a_conditional_unet_is_told_the_class() -> None:
    net = digits_diffusion(conditional=True).net
    x, time = torch.randn(4, 1, 8, 8, generator=seeded()), torch.rand(4, generator=seeded(1))
    with torch.no_grad():
        assert not torch.allclose(net(x, time, torch.full((4,), 3)), net(x, time, torch.full((4,), 5)))
    with pytest.raises(ValueError, match="this net is class-conditional: pass the class labels"):
        net(x, time)
    assert net.class_embedding.weight.shape == (NULL + 1, net.time_embedding[0].out_features)
    assert not [name for name in UNet((1, 8, 8), channels=8).state_dict() if "class" in name]


def test_label_dropout_replaces_labels_with_the_null_label_at_its_rate() -> None:
    labels = torch.arange(10).repeat(1000)
    torch.manual_seed(0)
    dropped = drop_labels(labels, 0.25, NULL)
    kept = dropped != NULL
    assert 0.23 < 1 - kept.float().mean() < 0.27
    assert torch.equal(dropped[kept], labels[kept])
    assert torch.equal(drop_labels(labels, 0.0, NULL), labels)

    model = digits_diffusion(conditional=True, label_dropout=0.5).train()
    seen = []

    def recording_net(x: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen.append(labels)
        return model.net(x, time, labels)

    labels = torch.arange(10).repeat(40)
    model.loss(torch.rand(400, 1, 8, 8, generator=seeded()) * 2 - 1, recording_net, labels)
    (trained_on,) = seen
    kept = trained_on != NULL
    assert 0.4 < 1 - kept.float().mean() < 0.6 and torch.equal(trained_on[kept], labels[kept])


def test_the_guidance_rule_follows_ho_and_salimans_w() -> None:
    """(1 + w) conditional - w unconditional: w = 0 is the conditional prediction alone, from one pass of the net;
    w = -1 is the unconditional one; otherwise both come from one pass of 2n images."""
    sizes = []

    def net(x: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        sizes.append(len(x))
        return x * (labels.float() + 1).view(-1, 1, 1, 1) + time.view(-1, 1, 1, 1)

    x, time, labels = torch.randn(3, 1, 4, 4, generator=seeded()), torch.rand(3), torch.tensor([0, 4, 9])
    conditional, unconditional = net(x, time, labels), net(x, time, torch.full((3,), NULL))
    sizes.clear()
    assert torch.equal(guided_prediction(net, x, time, labels, 0.0, NULL), conditional) and sizes == [3]
    for w in (-1.0, 0.5, 3.0):
        sizes.clear()
        guided = guided_prediction(net, x, time, labels, w, NULL)
        assert torch.allclose(guided, (1 + w) * conditional - w * unconditional, atol=1e-5) and sizes == [6], w
    assert torch.allclose(guided_prediction(net, x, time, labels, -1.0, NULL), unconditional, atol=1e-5)


def test_guidance_0_is_the_conditional_model_and_guidance_changes_the_samples() -> None:
    model = digits_diffusion(conditional=True)
    plain = model.sample(4, seeded(), labels=3)
    guided = model.sample(4, seeded(), labels=3, guidance=2)
    assert torch.equal(plain, model.sample(4, seeded(), labels=3, guidance=0))
    assert not torch.allclose(plain, guided)
    # w = 0 never asks the unconditional model: a changed null-label embedding changes guided samples only.
    with torch.no_grad():
        model.net.class_embedding.weight[NULL] += 1
    assert torch.equal(plain, model.sample(4, seeded(), labels=3))
    assert not torch.allclose(guided, model.sample(4, seeded(), labels=3, guidance=2))
    model.guidance = 2.0  # the model's scale is the default
    assert torch.equal(model.sample(4, seeded(), labels=3), model.sample(4, seeded(), labels=3, guidance=2))


def test_the_label_decides_what_is_drawn() -> None:
    model = digits_diffusion(conditional=True)
    threes = model.sample(4, seeded(), labels=3)
    assert not torch.allclose(threes, model.sample(4, seeded(), labels=5))
    assert torch.equal(model.sample(4, seeded()), model.sample(4, seeded(), labels=[0, 1, 2, 3]))


def test_an_unconditional_diffusion_model_takes_no_guidance() -> None:
    with pytest.raises(ConfigError, match=r"^model.guidance=1.0 steers a class-conditional diffusion model"):
        digits_diffusion(guidance=1.0)
    with pytest.raises(ConfigError, match=r"^this diffusion model is unconditional: guidance=2 steers a class-cond"):
        digits_diffusion().sample(2, guidance=2)


@pytest.mark.parametrize(
    ("overrides", "line"),
    [
        (["model.guidance=2"], "model.guidance=2 steers a class-conditional diffusion model, and this one is"),
        (["model.conditional=true", "model.guidance=-2"], "model.guidance=-2 is not allowed"),
        (["model.conditional=true", "model.label_dropout=1"], "model.label_dropout=1 is not allowed"),
        (
            ["model.conditional=true", "data=image_folder", "data.path=."],
            "model.conditional=true: the diffusion model learns to generate a requested class, but data=image_folder",
        ),
    ],
)
def test_bad_guidance_settings_are_one_line_errors(genlab_train, overrides: list[str], line: str) -> None:
    run = genlab_train("model=diffusion", *overrides)
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr[-2000:]
    (error,) = run.stderr.strip().splitlines()
    assert error.startswith(f"genlab-train: error: {line}")


# -- through the entrypoints ------------------------------------------------------------------------------------------


class Folder:
    """A scratch folder in which the console scripts run in this process, as a user would run them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = train_env(root / "outputs")

    def command(self, program: str, *arguments: str) -> Result:
        process = call_entrypoint(program, arguments, cwd=self.root, env=self.env)
        assert process.returncode == 0, f"{program} {arguments}:\n{process.stderr[-3000:]}"
        return process

    def train(self, name: str, *overrides: str) -> Path:
        self.command("genlab-train", *overrides, f"hydra.run.dir=outputs/{name}")
        return self.root / "outputs" / name


def metrics(path: Path) -> dict:
    return json.loads(path.read_text())


def numbers(content: dict) -> dict[str, float]:
    return {key: value for key, value in content.items() if "/" in key}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Folder:
    return Folder(tmp_path_factory.mktemp("guidance"))


@pytest.fixture(scope="module")
def cddpm_run(folder: Folder) -> Path:
    return folder.train("cddpm", *LEARNING, "trainer.max_epochs=3")


def test_a_short_conditional_run_draws_the_requested_classes(cddpm_run: Path) -> None:
    result = metrics(cddpm_run / "metrics.json")
    # Chance is 0.1 for ten classes; these few seconds of training reach about 0.4 unguided.
    assert result["val/cond_acc"] > 0.25 and result["test/cond_acc"] > 0.25, result
    assert len(result["sample_quality"]["cond_acc_per_class"]) == 10
    assert math.isfinite(result["test/fid"]) and 0 < result["test/bpd"] < 20
    # Pictures: one row of 8 samples per class; the trajectory of each class's first sample.
    width, height = Image.open(cddpm_run / "samples" / "samples.png").size
    assert height == 10 * CELL + 2 and width > 8 * CELL + 2  # each row labelled with its class
    assert Image.open(cddpm_run / "samples" / "trajectory.png").size[1] == 10 * CELL + 2


def test_a_sweep_of_guidance_scales_is_evaluated_and_plotted(folder: Folder, cddpm_run: Path) -> None:
    folder.command("genlab-eval", f"run={cddpm_run}")
    assert numbers(metrics(cddpm_run / "eval.json")) == numbers(metrics(cddpm_run / "metrics.json"))
    folder.command("genlab-eval", f"run={cddpm_run}", "model.guidance=3")
    guided = metrics(cddpm_run / "eval.json")
    assert guided["overrides"] == ["model.guidance=3"]
    assert guided["test/cond_acc"] > metrics(cddpm_run / "metrics.json")["test/cond_acc"] + 0.2, guided

    out = folder.root / "tradeoff"
    metric_options = ["--metric", "test/fid", "--metric", "test/cond_acc"]
    process = folder.command("genlab-compare", "--evals", str(cddpm_run), "--plot", *metric_options, "--out", str(out))
    assert "model.guidance" in process.stdout
    assert {"test_fid_vs_model.guidance.png", "test_cond_acc_vs_model.guidance.png"} <= {p.name for p in out.iterdir()}
    with (out / "comparison.csv").open() as f:
        rows = {float(row["model.guidance"]): float(row["test/cond_acc mean"]) for row in csv.DictReader(f)}
    assert rows == {0.0: metrics(cddpm_run / "metrics.json")["test/cond_acc"], 3.0: guided["test/cond_acc"]}


def test_compare_of_evaluations_refuses_what_it_cannot_do(folder: Folder, cddpm_run: Path) -> None:
    unevaluated = folder.root / "unevaluated"
    shutil.copytree(cddpm_run / ".hydra", unevaluated / ".hydra")
    cases = [
        (["--evals", str(unevaluated)], f"--evals: the runs under {unevaluated} have no genlab-eval records"),
        ([str(cddpm_run), "--plot", "--metric", "val/nope"], "--metric val/nope is not a metric of every compared"),
        ([str(cddpm_run), "--metric", "val/fid"], "--metric chooses what --plot draws; add --plot"),
    ]
    for arguments, line in cases:
        process = call_entrypoint("genlab-compare", [*arguments, "--out", str(folder.root)], folder.root, folder.env)
        assert process.returncode == 2 and "Traceback" not in process.stderr, process.stderr[-2000:]
        (error,) = process.stderr.strip().splitlines()
        assert error.startswith(f"genlab-compare: error: {line}"), error


def test_sample_one_class_with_guidance(folder: Folder, cddpm_run: Path) -> None:
    for name, guidance in (("plain", []), ("guided", ["guidance=3"])):
        folder.command("genlab-sample", f"run={cddpm_run}", "label=3", "n=4", *guidance, f"out={name}")
        assert Image.open(folder.root / name / "samples.png").size == (2 * CELL + 2,) * 2
    plain, guided = (folder.root / name / "samples.png" for name in ("plain", "guided"))
    assert plain.read_bytes() != guided.read_bytes()
    process = call_entrypoint("genlab-sample", [f"run={cddpm_run}", "guidance=-2"], folder.root, folder.env)
    assert process.returncode == 2 and "genlab-sample: error: guidance=-2 is not allowed" in process.stderr


def test_a_resumed_conditional_diffusion_model_ends_where_an_unbroken_one_ends(folder: Folder) -> None:
    """The label dropout draws from the training random stream, which comes back with the checkpoint."""
    tiny = [*TINY_DIFFUSION, "model.conditional=true", "trainer.accelerator=cpu", "trainer.deterministic=true"]
    unbroken = folder.train("tiny_unbroken", *tiny, "trainer.max_epochs=2")
    part = folder.train("tiny_part", *tiny, "trainer.max_epochs=1")
    folder.command("genlab-train", f"resume={part}", "trainer.max_epochs=2")
    assert numbers(metrics(part / "metrics.json")) == numbers(metrics(unbroken / "metrics.json"))
    assert "val/cond_acc" in metrics(part / "metrics.json")
