"""The private upstream APIs genlab relies on (genlab.upstream) still behave as genlab expects.

Each failure names the package, its installed version and what changed, so an upgrade that breaks one stops here
with one clear line instead of deep inside a run (or, worse, silently logging on the wrong steps).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, ListConfig, OmegaConf
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.tensorboard.summary import hparams
from torch.utils.tensorboard.writer import FileWriter

from genlab import upstream

BATCHES = 6
LOG_EVERY = 2


def changed(package: str, what: str) -> str:
    """The assertion message: which package, at which version, no longer does what genlab relies on."""
    return f"{package} {version(package)}: {what}; update genlab/upstream.py (and the pin in pyproject.toml)"


class Recorder(Logger):
    """A logger that keeps what Lightning sends it: the steps `self.log` values really go out on."""

    def __init__(self) -> None:
        super().__init__()
        self.logged: list[tuple[dict[str, float], int | None]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> int:
        return 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.logged.append((dict(metrics), step))

    def log_hyperparams(self, params: object, *args: object, **kwargs: object) -> None:
        pass


class Probe(pl.LightningModule):
    """A one-layer model that records, on every training step, what genlab.upstream reads from the trainer."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(2, 1)
        self.seen: list[tuple[bool, int, pl.Trainer | None]] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> torch.Tensor:
        trainer = self.trainer
        self.seen.append(
            (
                upstream.lightning_logs_this_step(trainer),
                upstream.lightning_logging_step(trainer),
                upstream.attached_trainer(self),
            )
        )
        loss = self.layer(batch[0]).pow(2).mean()
        self.log("probe", loss, on_step=True, on_epoch=False)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


class Fit:
    def __init__(self, root: Path) -> None:
        self.model = Probe()
        self.recorder = Recorder()
        self.tensorboard = TensorBoardLogger(save_dir=str(root), name="tensorboard", version="")
        self.trainer = pl.Trainer(
            accelerator="cpu",
            max_epochs=1,
            log_every_n_steps=LOG_EVERY,
            logger=[self.recorder, self.tensorboard],
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
        data = TensorDataset(torch.randn(BATCHES * 2, 2))
        self.trainer.fit(self.model, DataLoader(data, batch_size=2))


@pytest.fixture(scope="module")
def fit(tmp_path_factory) -> Fit:
    """One tiny fit on the CPU (six batches, logs every two steps), shared by the tests of the Trainer's internals."""
    return Fit(tmp_path_factory.mktemp("fit"))


def test_genlab_logs_on_the_steps_and_step_axis_of_self_log(fit: Fit) -> None:
    steps = [step for _, step, _ in fit.model.seen]
    assert steps == list(range(BATCHES)), changed(
        "pytorch-lightning", f"trainer.fit_loop.epoch_loop._batches_that_stepped went {steps} over {BATCHES} batches"
    )
    genlab_steps = [step for logs, step, _ in fit.model.seen if logs]
    lightning_steps = [step for metrics, step in fit.recorder.logged if "probe" in metrics]
    assert genlab_steps == lightning_steps, changed(
        "pytorch-lightning",
        f"trainer._logger_connector.should_update_logs was true on steps {genlab_steps}, but self.log values went "
        f"out on steps {lightning_steps}",
    )
    assert lightning_steps == [1, 3, 5], changed(
        "pytorch-lightning", f"with log_every_n_steps={LOG_EVERY}, self.log values went out on steps {lightning_steps}"
    )


def test_attached_trainer_is_the_fitting_trainer_and_none_outside(fit: Fit) -> None:
    attached = {id(trainer) for _, _, trainer in fit.model.seen}
    assert attached == {id(fit.trainer)}, changed("pytorch-lightning", "LightningModule._trainer inside fit")
    assert upstream.attached_trainer(Probe()) is None, changed(
        "pytorch-lightning", "LightningModule._trainer of a module outside any trainer is not None"
    )


def test_tensorboard_file_writer_writes_into_the_runs_own_event_files(fit: Fit) -> None:
    # As in genlab's log_hparams: after the fit, when Lightning has closed the writer.
    writer = upstream.tensorboard_file_writer(fit.tensorboard.experiment)
    assert isinstance(writer, FileWriter), changed("torch", f"SummaryWriter._get_file_writer() gave {type(writer)}")
    log_dir = Path(fit.tensorboard.log_dir)
    assert Path(writer.get_logdir()) == log_dir, changed(
        "torch", f"SummaryWriter._get_file_writer() writes to {writer.get_logdir()}, not the run's {log_dir}"
    )
    for summary in hparams({"seed": 3}, {"probe": 0.0}):
        writer.add_summary(summary)
    writer.flush()
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert "probe" in events.Tags()["scalars"], changed("tensorboard", "the run's scalars are not in its folder")
    assert "_hparams_/experiment" in events.PluginTagToContent("hparams"), changed(
        "torch", "the hparams summary written by SummaryWriter._get_file_writer() is not in the run's folder"
    )
    assert not [p for p in log_dir.iterdir() if p.is_dir()], "the hparams summary made a run folder of its own"


def test_fid_inception_v3_takes_genlab_arguments_and_reads_a_local_file_only(tmp_path: Path) -> None:
    from torchmetrics.image.fid import NoTrainInceptionV3

    assert issubclass(NoTrainInceptionV3, nn.Module), changed("torchmetrics", "NoTrainInceptionV3 is no nn.Module")
    try:
        inspect.signature(NoTrainInceptionV3).bind(
            name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path="weights.pth"
        )
    except TypeError as exc:
        pytest.fail(changed("torchmetrics", f"NoTrainInceptionV3 no longer takes genlab's arguments ({exc})"))
    not_weights = tmp_path / "not_weights.pth"
    torch.save({}, not_weights)
    # Without torch-fidelity torchmetrics refuses (genlab checks first); with it, the file is read, not downloaded
    # (the suite refuses network connections), and a file that is not the weights fails to load.
    fidelity = importlib.util.find_spec("torch_fidelity") is not None
    with pytest.raises(RuntimeError if fidelity else ModuleNotFoundError):
        upstream.fid_inception_v3(str(not_weights))


def test_hydra_overrides_parse_in_the_forms_genlab_reads() -> None:
    lines = ["model=vae", "model.latent_dim=3", "optimizer.lr=1e-3", "+extra.flag=true", "~callbacks.samples"]
    lines += ["name=null", "data.sizes=[1,2]", "run=my_run"]
    parsed = upstream.parse_hydra_overrides(lines)
    seen = [
        (o.input_line, o.key_or_group, o.is_add(), o.is_delete(), None if o.is_delete() else o.value()) for o in parsed
    ]
    expected = [
        ("model=vae", "model", False, False, "vae"),
        ("model.latent_dim=3", "model.latent_dim", False, False, 3),
        ("optimizer.lr=1e-3", "optimizer.lr", False, False, 1e-3),
        ("+extra.flag=true", "extra.flag", True, False, True),
        ("~callbacks.samples", "callbacks.samples", False, True, None),
        ("name=null", "name", False, False, None),
        ("data.sizes=[1,2]", "data.sizes", False, False, [1, 2]),
        ("run=my_run", "run", False, False, "my_run"),
    ]
    assert seen == expected, changed("hydra-core", "OverridesParser.parse_overrides reads genlab's overrides otherwise")
    with pytest.raises(OverrideParseException):
        upstream.parse_hydra_overrides(["model.latent_dim=[1"])


def test_ddp_workers_are_started_on_this_job_alone(compose_config, monkeypatch) -> None:
    from pytorch_lightning.strategies.launchers import subprocess_script

    launcher = inspect.getsource(subprocess_script._SubprocessScriptLauncher._call_children_scripts)
    assert "_hydra_subprocess_cmd(" in launcher, changed(
        "pytorch-lightning", "the DDP launcher no longer builds its workers' command with _hydra_subprocess_cmd"
    )
    cfg = compose_config("seed=3", "trainer.max_epochs=2")
    monkeypatch.setattr(sys, "argv", ["genlab-train", "-m", "seed=3,4", "trainer.max_epochs=2"])
    with upstream.ddp_workers_run_this_job():
        command, _ = subprocess_script._hydra_subprocess_cmd(local_rank=1)
    assert "seed=3,4" not in command, changed(
        "pytorch-lightning", f"the DDP worker command {command} does not come from sys.argv"
    )
    assert command[-5:] == [
        "seed=3",
        "trainer.max_epochs=2",
        f'hydra.run.dir="{cfg.hydra.runtime.output_dir}"',
        "hydra.job.name=train_ddp_process_1",
        "hydra.output_subdir=null",
    ], changed("pytorch-lightning", f"_hydra_subprocess_cmd builds the DDP worker command {command}")
    assert sys.argv[1] == "-m", "ddp_workers_run_this_job did not give the sweep's command back"


def test_unresolved_value_leaves_interpolations_and_resolvers_alone() -> None:
    calls: list[str] = []
    OmegaConf.register_new_resolver("upstream_probe", lambda: calls.append("called") or "builtins.open")
    try:
        cfg = OmegaConf.create(
            {"model": {"_target_": "${upstream_probe:}"}, "nets": [{"_target_": "${name}"}], "name": "os.system"}
        )
        model = upstream.config_child_node(cfg, "model")
        nets = upstream.config_child_node(cfg, "nets")
        assert isinstance(model, DictConfig) and isinstance(nets, ListConfig), changed(
            "omegaconf", "Container._get_node gives no container for a child container"
        )
        first = upstream.config_child_node(nets, 0)
        values = [upstream.unresolved_value(model, "_target_"), upstream.unresolved_value(first, "_target_")]
        assert values == ["${upstream_probe:}", "${name}"], changed(
            "omegaconf", f"Container._get_node(key)._value() gave {values}, not the interpolations as written"
        )
        assert not calls, changed("omegaconf", "Container._get_node(key)._value() ran a resolver")
    finally:
        OmegaConf.clear_resolver("upstream_probe")


def tensors(seed: int, dtype: torch.dtype = torch.float32) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(shape, generator=generator) * 10).to(dtype) for shape in [(3,), (2, 4), (1, 2, 3), ()]]


def test_foreach_ops_match_the_per_tensor_loop() -> None:
    averaged, current, weight = tensors(0), tensors(1), torch.tensor(0.9)
    expected = [a * weight + c * (1 - weight) for a, c in zip(averaged, current, strict=True)]
    upstream.foreach_blend_(averaged, current, weight)
    for got, want in zip(averaged, expected, strict=True):
        torch.testing.assert_close(got, want, msg=changed("torch", "torch._foreach_mul_/_foreach_add_ blend"))

    counters, sources = tensors(2, torch.long), tensors(3, torch.long)
    upstream.foreach_copy_(counters, sources)
    assert all(torch.equal(c, s) for c, s in zip(counters, sources, strict=True)), changed(
        "torch", "torch._foreach_copy_"
    )

    norms = upstream.foreach_norm(tensors(4))
    for got, tensor in zip(norms, tensors(4), strict=True):
        torch.testing.assert_close(got, torch.linalg.vector_norm(tensor), msg=changed("torch", "torch._foreach_norm"))


def test_a_job_reports_to_the_trial_its_sweeper_asked_for(tmp_path: Path) -> None:
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    asked = optuna.create_study(study_name="s", storage=storage).ask()
    trial = upstream.optuna_trial(optuna.load_study(study_name="s", storage=storage), asked.number)
    trial.report(1.5, step=3)
    assert optuna.load_study(study_name="s", storage=storage).trials[asked.number].intermediate_values == {3: 1.5}


class ManualSteps(pl.LightningModule):
    """Manual optimization that steps its optimizer between genlab's begin/end calls, not through `step()`."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.layer = nn.Linear(2, 1)
        self.steps_seen: list[int] = []

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> None:
        optimizer = self.optimizers()
        self.steps_seen.append(self.trainer.global_step)
        self.layer(batch[0]).pow(2).mean().backward()
        upstream.lightning_optimizer_step_begins(optimizer)
        optimizer.optimizer.step()
        upstream.lightning_optimizer_step_ends(optimizer)
        optimizer.optimizer.zero_grad()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_an_optimizer_step_outside_lightning_optimizer_counts_as_a_global_step() -> None:
    model = ManualSteps()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, DataLoader(TensorDataset(torch.randn(10, 2)), batch_size=2))
    assert model.steps_seen == [0, 1, 2] and trainer.global_step == 3, changed(
        "pytorch-lightning",
        f"LightningOptimizer._on_before_step/_on_after_step around a step left trainer.global_step at "
        f"{model.steps_seen} then {trainer.global_step} (expected [0, 1, 2] then 3, stopping at max_steps=3)",
    )


def test_without_a_gpu_the_gpu_check_goes_back_to_torchs_default(monkeypatch) -> None:
    monkeypatch.setenv(upstream.NVML_CHECK, "1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    upstream.plain_gpu_check_without_a_gpu()
    assert os.environ[upstream.NVML_CHECK] == "1", "with a GPU, Lightning's fork-safe check stays"
    monkeypatch.undo()
    monkeypatch.setenv(upstream.NVML_CHECK, "1")
    assert not torch.cuda.is_available(), "this test runs where there is no GPU"
    upstream.plain_gpu_check_without_a_gpu()
    assert os.environ[upstream.NVML_CHECK] == "0"
    monkeypatch.delenv(upstream.NVML_CHECK)
    upstream.plain_gpu_check_without_a_gpu()
    assert upstream.NVML_CHECK not in os.environ, "a user's own setting (here: none) is left alone"


def test_lightning_still_asks_for_the_fork_safe_gpu_check() -> None:
    """What plain_gpu_check_without_a_gpu undoes: lightning_fabric setting the variable at import."""
    import lightning_fabric

    assert f'os.environ["{upstream.NVML_CHECK}"] = "1"' in inspect.getsource(lightning_fabric), (
        f"lightning_fabric (pytorch-lightning {version('pytorch-lightning')}) no longer sets {upstream.NVML_CHECK}: "
        "drop genlab.upstream.plain_gpu_check_without_a_gpu"
    )
