"""Class-conditional generation: labels in the nets, the shared conditioning, `cond_acc`, and conditional VAE and GAN
runs through genlab-train, genlab-eval and genlab-sample."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import CELL, QUIET_TRAIN, train_env
from inprocess import Result, call_entrypoint
from PIL import Image

import genlab
from genlab.data.spec import DataSpec
from genlab.errors import ConfigError, InputError
from genlab.models.conditioning import ClassConditioning, balanced_labels
from genlab.models.vae import VAE
from genlab.nets.conv import ConvEncoderDecoder
from genlab.nets.gan import DCGAN, MLPGAN
from genlab.nets.mlp import MLPEncoderDecoder

DIGITS = DataSpec(kind="image", shape=(1, 8, 8), num_classes=10, name="digits")
QUIET = [*QUIET_TRAIN, "logger=csv"]
# Whole epochs of the digits (22 batches of 64); cond_acc and FID on 200 class-balanced samples.
LEARNING = [*QUIET, "model.conditional=true", "metrics.num_real=200", "metrics.num_fake=200"]
CVAE = [*LEARNING, "trainer.max_epochs=3", "model.eval_iwae_k=0"]
# The GAN with 5x DCGAN's learning rate and no EMA, so that three epochs suffice.
CGAN = [*LEARNING, "model=gan", "trainer.max_epochs=3", "model.ema_decay=0"]
CGAN += ["model.optimizer.lr=1e-3", "model.discriminator_optimizer.lr=1e-3"]
# Two batches per epoch, deterministic: a conditional GAN that resumes exactly.
TINY_CGAN = [
    *QUIET,
    "model=gan",
    "model/net=mlp_gan",
    "model.net.hidden_dims=[32]",
    "model.conditional=true",
    "trainer.accelerator=cpu",
    "trainer.deterministic=true",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.limit_test_batches=1",
    "metrics.num_real=64",
    "metrics.num_fake=64",
    "callbacks.samples.every_n_epochs=1000",
]


# -- nets and the shared conditioning ---------------------------------------------------------------------------------


def conditional_parts(shape: tuple[int, ...]) -> list[tuple[str, torch.nn.Module, torch.Tensor]]:
    """(name, part, input) of every net's parts that take labels, built conditional on 10 classes."""
    latent = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    images = torch.rand((4, *shape), generator=torch.Generator().manual_seed(1))
    parts = []
    for net in (MLPEncoderDecoder, ConvEncoderDecoder):
        built = net(shape=shape, latent_dim=8, num_classes=10)
        parts += [
            (f"{net.__name__}.encoder", built.encoder, images),
            (f"{net.__name__}.decoder", built.decoder, latent),
        ]
    for net in (DCGAN, functools.partial(DCGAN, spectral_norm=True, d_norm="none"), MLPGAN):
        built = net(shape=shape, latent_dim=8, num_classes=10).eval()
        name = getattr(net, "func", net).__name__
        parts += [
            (f"{name}.generator", built.generator, latent),
            (f"{name}.discriminator", built.discriminator, images),
        ]
    return parts


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 32, 32)])
def test_every_net_takes_labels_and_the_label_changes_its_output(shape) -> None:
    threes, fives = torch.full((4,), 3), torch.full((4,), 5)
    for name, part, x in conditional_parts(shape):
        with torch.no_grad():
            out_3, out_5 = part(x, threes), part(x, fives)
        assert out_3.shape == out_5.shape and out_3.shape[0] == 4, name
        assert not torch.allclose(out_3, out_5), f"{name}: the label does not change the output"
        with pytest.raises(ValueError, match="this net is class-conditional: pass the class labels"):
            part(x)


def test_unconditional_nets_have_no_label_parameters() -> None:
    for net in (MLPEncoderDecoder(shape=(1, 8, 8), latent_dim=4), DCGAN(shape=(1, 8, 8), latent_dim=4)):
        assert not [name for name in net.state_dict() if "embedding" in name]
    conditional = DCGAN(shape=(1, 8, 8), latent_dim=4, num_classes=10).state_dict()
    embeddings = [name for name in conditional if "embedding" in name]
    assert {name.split(".")[0] for name in embeddings} == {"generator", "discriminator"}
    assert all(len(conditional[name]) == 10 for name in embeddings), "one embedding row per class"


def test_balanced_labels_cover_the_classes_evenly_also_when_split_across_processes() -> None:
    labels = balanced_labels(1000, 10)
    assert torch.bincount(labels).tolist() == [100] * 10
    shards = torch.cat([balanced_labels(500, 10, start=0), balanced_labels(500, 10, start=500)])
    assert torch.equal(shards, labels)
    assert torch.bincount(balanced_labels(25, 10)).tolist() == [3] * 5 + [2] * 5


def test_sampling_labels_are_checked() -> None:
    conditioning = ClassConditioning(10, "digits")
    assert conditioning.for_sampling(3, 7, "cpu").tolist() == [7, 7, 7]
    assert conditioning.for_sampling(3, None, "cpu").tolist() == [0, 1, 2]
    with pytest.raises(InputError, match=r"^label 12 is not a class of data=digits, whose classes are 0..9$"):
        conditioning.for_sampling(3, [1, 12, 3], "cpu")
    with pytest.raises(InputError, match="give one label for all 3 samples or one per sample"):
        conditioning.for_sampling(3, [1, 2], "cpu")
    with pytest.raises(ConfigError, match=r"this model is unconditional \(trained with model.conditional=false\)"):
        ClassConditioning().for_sampling(3, 1, "cpu")


def test_an_unconditional_model_given_labels_is_one_clear_error() -> None:
    vae = VAE(DIGITS, functools.partial(MLPEncoderDecoder, hidden_dims=[16]), torch.optim.Adam, latent_dim=4)
    assert vae.sample(2).shape == (2, 1, 8, 8)
    with pytest.raises(ConfigError, match="class labels were given, but this model is unconditional"):
        vae.sample(2, labels=3)


def test_a_net_that_takes_no_labels_is_refused_for_a_conditional_model() -> None:
    class LegacyNet(MLPEncoderDecoder):
        def __init__(self, shape, latent_dim) -> None:
            super().__init__(shape, latent_dim)

    with pytest.raises(
        ConfigError, match=r"the net LegacyNet \(model/net\) takes no class labels, which model.conditional=true"
    ):
        VAE(DIGITS, LegacyNet, torch.optim.Adam, latent_dim=4, conditional=True)
    assert VAE(DIGITS, LegacyNet, torch.optim.Adam, latent_dim=4).sample(1).shape == (1, 1, 8, 8)


@pytest.mark.parametrize(
    ("conditional", "plain"),
    [
        ("cvae_mnist", "vae_mnist"),
        ("cdcgan_mnist", "dcgan_mnist"),
        ("cdcgan_cifar10", "dcgan_cifar10"),
        ("cddpm_mnist", "ddpm_mnist"),
        ("cddpm_cifar10", "ddpm_cifar10"),
    ],
)
def test_conditional_experiments_are_their_unconditional_ones_plus_the_label(
    compose_config, conditional, plain
) -> None:
    with_labels, without = compose_config(f"experiment={conditional}"), compose_config(f"experiment={plain}")
    assert with_labels.model.conditional and not without.model.conditional
    with_labels.model.conditional = False
    for group in ("model", "data", "trainer", "metrics"):
        assert with_labels[group] == without[group], group


# -- through the entrypoints ------------------------------------------------------------------------------------------


class Folder:
    """A scratch folder in which the console scripts run in this process, as a user would run them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = train_env(root / "outputs")

    def command(self, program: str, *arguments: str) -> Result:
        return call_entrypoint(program, arguments, cwd=self.root, env=self.env)

    def train(self, name: str, *overrides: str) -> Path:
        process = self.command("genlab-train", *overrides, f"hydra.run.dir=outputs/{name}")
        assert process.returncode == 0, process.stderr[-3000:]
        return self.root / "outputs" / name


def error_line(process: Result, program: str) -> str:
    assert process.returncode == 2, process.stderr[-3000:]
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    (line,) = [line for line in process.stderr.splitlines() if line.strip()]
    assert line.startswith(f"{program}: error: ")
    return line


def metrics(run_dir: Path, name: str = "metrics.json") -> dict:
    return json.loads((run_dir / name).read_text())


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Folder:
    return Folder(tmp_path_factory.mktemp("conditional"))


@pytest.fixture(scope="module")
def cvae_run(folder: Folder) -> Path:
    return folder.train("cvae", *CVAE)


@pytest.fixture(scope="module")
def cgan_run(folder: Folder) -> Path:
    return folder.train("cgan", *CGAN)


@pytest.mark.parametrize("run_fixture", ["cvae_run", "cgan_run"])
def test_a_short_conditional_run_generates_the_requested_classes(run_fixture: str, request) -> None:
    run_dir = request.getfixturevalue(run_fixture)
    result = metrics(run_dir)
    # Chance is 0.1 for ten classes; a few seconds of training reach about 0.9.
    assert result["val/cond_acc"] > 0.3 and result["test/cond_acc"] > 0.3, result
    per_class = result["sample_quality"]["cond_acc_per_class"]
    assert len(per_class) == 10 and sum(per_class) / 10 == pytest.approx(result["test/cond_acc"], abs=1e-6)
    assert result["sample_quality"]["class_histogram"] and result["test/fid"] > 0
    # Within each class: FID per class (averaged: test/intra_fid) and the spread of its samples against the data's.
    quality = result["sample_quality"]
    assert len(quality["intra_fid_per_class"]) == len(quality["spread_per_class"]) == 10
    assert result["test/intra_fid"] == pytest.approx(sum(quality["intra_fid_per_class"]) / 10, rel=1e-5)
    assert result["test/intra_fid"] > 0 and 0 < result["test/class_spread"] < 10
    # Training pictures: one row of 8 samples per class (8 x 8 digits at 64 px, 2-px gaps), each row labelled.
    width, height = Image.open(run_dir / "samples" / "samples.png").size
    assert height == 10 * CELL + 2 and width > 8 * CELL + 2


def test_the_label_decides_what_is_drawn(cgan_run: Path) -> None:
    model = genlab.load_run(cgan_run).model
    threes = model.sample(8, torch.Generator().manual_seed(0), labels=3)
    assert torch.equal(threes, model.sample(8, torch.Generator().manual_seed(0), labels=3))
    assert not torch.allclose(threes, model.sample(8, torch.Generator().manual_seed(0), labels=5))
    # Without labels a conditional model spreads its samples over the classes: 0, 1, 2, ...
    unlabelled = model.sample(3, torch.Generator().manual_seed(0))
    assert torch.equal(unlabelled, model.sample(3, torch.Generator().manual_seed(0), labels=[0, 1, 2]))


def test_eval_reproduces_cond_acc(folder: Folder, cvae_run: Path) -> None:
    process = folder.command("genlab-eval", f"run={cvae_run}")
    assert process.returncode == 0, process.stderr[-3000:]
    numbers = {key: value for key, value in metrics(cvae_run).items() if "/" in key}
    assert {key: value for key, value in metrics(cvae_run, "eval.json").items() if "/" in key} == numbers
    assert "test/cond_acc" in numbers


def test_sample_one_class_or_a_row_per_class(folder: Folder, cvae_run: Path) -> None:
    for arguments, size in (
        (["label=3", "n=16", "out=three"], (4 * CELL + 2,) * 2),
        (["labels=all", "out=all"], (8 * CELL + 2, 10 * CELL + 2)),
    ):
        process = folder.command("genlab-sample", f"run={cvae_run}", *arguments)
        assert process.returncode == 0, process.stderr[-3000:]
        out = folder.root / arguments[-1].removeprefix("out=")
        assert {p.name for p in out.iterdir()} == {"samples.png", "reconstructions.png", "interpolation.png"}
        width, height = Image.open(out / "samples.png").size
        labelled = arguments[0] == "labels=all"  # a column of class labels on the left
        assert height == size[1] and (width > size[0] if labelled else width == size[0]), arguments
    again = folder.command("genlab-sample", f"run={cvae_run}", "label=3", "n=16", "out=again")
    assert again.returncode == 0
    assert (folder.root / "again" / "samples.png").read_bytes() == (folder.root / "three" / "samples.png").read_bytes()


def test_a_resumed_conditional_gan_ends_where_an_unbroken_one_ends(folder: Folder) -> None:
    unbroken = folder.train("tiny_unbroken", *TINY_CGAN, "trainer.max_epochs=3")
    part = folder.train("tiny_part", *TINY_CGAN, "trainer.max_epochs=2")
    process = folder.command("genlab-train", f"resume={part}", "trainer.max_epochs=3")
    assert process.returncode == 0, process.stderr[-3000:]
    numbers = {key: value for key, value in metrics(part).items() if "/" in key}
    assert numbers == {key: value for key, value in metrics(unbroken).items() if "/" in key}
    assert "val/cond_acc" in numbers


@pytest.mark.parametrize(
    "settings",
    [
        ["model.loss=wgan_gp", "model.n_critic=2"],
        ["model.loss=hinge", "model.net.spectral_norm=true", "model.r1_weight=1"],
    ],
    ids=["wgan_gp", "hinge+sn+r1"],
)
def test_a_conditional_gan_trains_with_each_loss_and_penalty(folder: Folder, settings: list[str]) -> None:
    result = metrics(folder.train(f"loss_{settings[0][11:]}", *TINY_CGAN, "trainer.max_epochs=1", *settings))
    for name in ("val/fid", "test/fid", "test/cond_acc", "val/d_real", "test/d_fake"):
        assert math.isfinite(result[name]), name


@pytest.mark.parametrize(
    ("arguments", "line"),
    [
        (["label=12"], "label 12 is not a class of data=digits, whose classes are 0..9"),
        (["labels=[0,10]"], "label 10 is not a class of data=digits, whose classes are 0..9"),
        (["label=3", "labels=all"], "give label=K (one class) or labels=all (a row per class), not both"),
        (["label=three"], "label='three' is not allowed: expected an integer or null"),
        (["labels=some"], "labels='some' is not allowed: expected one of 'all' or a list of integers or null"),
        (["labels=[]"], "labels=[] asks for no class; give labels=all or a list of classes, e.g. labels=[0,3]"),
    ],
)
def test_bad_labels_are_one_line(folder: Folder, cvae_run: Path, arguments: list[str], line: str) -> None:
    assert error_line(folder.command("genlab-sample", f"run={cvae_run}", *arguments), "genlab-sample").endswith(line)


def test_labels_for_an_unconditional_run_are_one_line(folder: Folder) -> None:
    run_dir = folder.train("plain", *QUIET, "trainer.max_epochs=1", "trainer.limit_train_batches=1", "metrics=none")
    for argument in ("label=3", "labels=all"):
        line = error_line(folder.command("genlab-sample", f"run={run_dir}", argument), "genlab-sample")
        assert "but this model is unconditional (trained with model.conditional=false)" in line


@pytest.mark.parametrize("model", ["vae", "gan"])
def test_a_conditional_model_on_unlabelled_data_is_one_line(folder: Folder, model: str) -> None:
    process = folder.command(
        "genlab-train", f"model={model}", "model.conditional=true", "data=image_folder", "data.path=."
    )
    line = error_line(process, "genlab-train")
    assert line.endswith(
        f"model.conditional=true: the {model.upper()} learns to generate a requested class, but data=image_folder "
        "has no class labels; use labelled data (digits, mnist, fashion_mnist, cifar10) or model.conditional=false"
    )
