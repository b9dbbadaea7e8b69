"""Every config option composes and resolves in-process; the configs are found from an installed wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from genlab.config import config_dir

GROUPS = [
    "data",
    "model",
    "model/net",
    "trainer",
    "logger",
    "callbacks",
    "paths",
    "hydra",
    "debug",
    "experiment",
]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


@pytest.mark.parametrize("override", [f"{group}={option}" for group in GROUPS for option in options(group)], ids=str)
def test_every_group_option_composes_and_resolves(compose_config, override: str) -> None:
    # Options with a mandatory value (`???`) get one, as their config comment asks of users.
    extra = (
        ["data.path=/some/files"]
        if override in ("data=image_folder", "data=text_file", "data=smiles", "data=music_folder", "data=hf_dataset")
        else []
    )
    # A transformers net is a language model's, and sets the text data's tokenizer: it composes with those.
    if override in ("model/net=hf", "model/net=hf_masked"):
        model = "model=masked_lm" if override.endswith("masked") else "model=transformer"
        extra = [model, "data=text_file", "data.path=/some/files", "model.net.pretrained=/some/model"]
    cfg = compose_config(override, *extra)
    assert cfg.hydra.run.dir.startswith(cfg.paths.log_dir)
    job = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    resolved = OmegaConf.to_container(job, resolve=True, throw_on_missing=True)
    assert resolved["model"]["_target_"].startswith("genlab.models.")
    assert resolved["callbacks"] is None or isinstance(resolved["callbacks"], dict)
    from genlab.checks import check_config

    check_config(job)  # every option's values fit the signatures of what they build


@pytest.mark.parametrize("debug", options("debug"))
@pytest.mark.parametrize("model", options("model"))
def test_every_debug_config_fits_every_model(compose_config, debug: str, model: str) -> None:
    from genlab.checks import check_config

    check_config(compose_config(f"model={model}", f"debug={debug}"))


def test_debug_modes_shrink_the_language_models_batches_samplers_and_data(compose_config) -> None:
    """nanoGPT's GPU recipe took over 200 s for debug=limit on a CPU: its debug runs use batches of two windows,
    no anomaly detection (it multiplied a Transformer's backward), and the masked LM unmasks in 4 steps."""
    for recipe in (["experiment=gpt_shakespeare", "trainer=cpu"], ["experiment=mdlm_shakespeare"]):
        full = compose_config(*recipe)
        assert full.data.batch_size == 64 and full.model.sample_tokens == 200, recipe
        for debug in ("debug=fdr", "debug=limit"):
            cfg = compose_config(*recipe, debug)
            assert (cfg.data.batch_size, cfg.trainer.detect_anomaly, cfg.model.sample_tokens) == (2, False, 32)
    assert compose_config("experiment=mdlm_shakespeare").model.sample_steps > 4
    assert compose_config("experiment=mdlm_shakespeare", "debug=limit").model.sample_steps == 4
    assert compose_config("debug=fdr").trainer.detect_anomaly  # the other families keep it
    assert compose_config("experiment=gpt_shakespeare", "debug=fdr", "data.batch_size=8").data.batch_size == 8
    # All of MOSES took the GPU recipe's debug run minutes to read: a subset.
    assert compose_config("experiment=gpt_moses").data.max_train is None
    assert compose_config("experiment=gpt_moses", "debug=limit").data.max_train == 10_000


@pytest.mark.parametrize("debug", ["limit", "overfit"])
def test_every_experiment_validates_within_its_debug_epochs(compose_config, debug: str) -> None:
    for experiment in options("experiment"):
        cfg = compose_config(f"experiment={experiment}", f"debug={debug}")
        assert cfg.trainer.val_check_interval is None, experiment


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), f"conf/{group} has no options"
    assert "vae_mnist_examples" in options("experiment")


def test_experiments_change_what_they_say(compose_config) -> None:
    cfg = compose_config("experiment=vae_mnist_examples")
    assert cfg.data.dataset == "mnist"
    assert cfg.model.latent_dim == 20
    assert list(cfg.model.net.hidden_dims) == [400]
    assert cfg.model.likelihood == "bernoulli"
    assert cfg.data.batch_size == 128
    assert cfg.model.optimizer.lr == pytest.approx(1e-3)


def test_checkpoints_follow_the_models_judged_metric(compose_config) -> None:
    cfg = compose_config()
    assert cfg.callbacks.model_checkpoint.monitor == "val/elbo"
    assert cfg.callbacks.model_checkpoint.mode == "min"
    cfg = compose_config("callbacks=early_stopping")
    assert (cfg.callbacks.early_stopping.monitor, cfg.callbacks.early_stopping.mode) == ("val/elbo", "min")


def test_data_dir_comes_from_the_environment(compose_config, monkeypatch) -> None:
    monkeypatch.setenv("GENLAB_DATA_DIR", "/datasets")
    assert compose_config("data=mnist").data.data_dir == "/datasets"
    monkeypatch.delenv("GENLAB_DATA_DIR")
    assert compose_config("data=mnist").data.data_dir == "data"


def test_runs_started_in_the_same_second_get_different_folders(compose_config) -> None:
    first = compose_config().hydra.run.dir
    second = compose_config().hydra.run.dir
    assert first != second


def test_configs_are_found_from_a_wheel_without_the_source_tree(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parents[1]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(repo),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("genlab-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    assert (site / "genlab" / "conf" / "train.yaml").is_file()
    script = (
        "import genlab.config as c, hydra\n"
        f"assert c.__file__.startswith({str(site)!r}), c.__file__\n"
        "with hydra.initialize_config_dir(config_dir=str(c.config_dir()), version_base='1.3'):\n"
        "    cfg = hydra.compose('train', overrides=['experiment=vae_mnist'])\n"
        "print(c.config_dir(), cfg.model._target_)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(site / "genlab" / "conf"), "genlab.models.vae.VAE"]
