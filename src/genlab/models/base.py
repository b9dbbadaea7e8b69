"""What every genlab model shares: the metric it is judged by, and optimizers built from config."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.core.optimizer import LightningOptimizer

from genlab.building import building
from genlab.errors import ConfigError, check
from genlab.models.direct_steps import DirectOptimizer, DirectSteps
from genlab.models.executions import StepsPerExecution, step_schedulers
from genlab.upstream import lightning_logging_step, lightning_logs_this_step

OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], torch.optim.lr_scheduler.LRScheduler]


def build_net(
    net: Callable[..., torch.nn.Module], data_kind: str, model: str, parts: tuple[str, ...] = (), **sizes: Any
) -> torch.nn.Module:
    """Call the configured net factory, checking that the net is made for this kind of data, takes class labels if
    `sizes` has `num_classes` (a conditional model), and has the `parts` (e.g. encoder and decoder) the model drives."""
    target = getattr(net, "func", net)  # a functools.partial from `_partial_: true`
    net_kind = getattr(target, "data_kind", data_kind)
    if net_kind != data_kind:
        raise ConfigError(
            f"the net {target.__name__} (model/net) is made for {net_kind} data, but {model} needs one for "
            f"{data_kind} data; pick another model/net"
        )
    if "num_classes" in sizes and "num_classes" not in inspect.signature(target).parameters:
        raise ConfigError(
            f"the net {target.__name__} (model/net) takes no class labels, which model.conditional=true needs; "
            f"pick a model/net that does, or model.conditional=false"
        )
    try:
        inspect.signature(net).bind(**sizes)
    except TypeError as exc:  # e.g. a VAE's net, which needs a latent size, given to a model that has none
        raise ConfigError(
            f"the net {target.__name__} (model/net) does not fit {model}, which gives it {', '.join(sizes)}: {exc}; "
            f"pick a model/net made for {model}"
        ) from exc
    with building("model.net", getattr(net, "keywords", {})):
        built = net(**sizes)
    missing = [part for part in parts if not hasattr(built, part)]
    if missing:
        raise ConfigError(
            f"the net {target.__name__} (model/net) has no {' or '.join(missing)}, which {model} needs; "
            f"pick a model/net made for {model}"
        )
    return built


class GenerativeModel(pl.LightningModule):
    """Base class: declares the judged metric that checkpointing, early stopping and sweeps read.

    `optimizer` and `scheduler` are factories (Hydra `_partial_: true` configs): the model supplies the
    parameters, the config everything else.
    """

    judged_metric: ClassVar[str]
    judged_mode: ClassVar[Literal["min", "max"]]
    #: The loss the next backward pass is of, as the non-finite-loss check names it (a GAN has two).
    backward_name: str = "train/loss"
    #: Set by `execute_steps` for K optimizer steps per Lightning step (genlab.models.executions); None: one.
    execution: StepsPerExecution | None = None
    #: During such a Lightning step: the optimizer steps made before the current one (the logging step axis).
    execution_step: int | None = None
    #: During a plain fit (one device, 32-bit, no profiler): the backward and optimizer steps the model makes itself
    #: without Lightning's plugins (genlab.models.direct_steps); None: through them.
    direct_steps: DirectSteps | None = None

    def __init__(
        self,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "epoch",
    ) -> None:
        super().__init__()
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval

    def training_loss(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """The loss of one training batch (its values logged with `log_training_step`), for Lightning's automatic
        optimization: what most models define."""
        raise NotImplementedError(f"{type(self).__name__} defines training_batch instead")

    def training_batch(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One training batch's whole step, for models that step their optimizers themselves (the GAN)."""
        raise NotImplementedError(f"{type(self).__name__} defines training_loss instead")

    @property
    def steps_itself(self) -> bool:
        """Whether the model steps its optimizers itself (defines `training_batch`)."""
        return type(self).training_batch is not GenerativeModel.training_batch

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.execution is not None:
            return self.execution.run(self, batch, batch_idx)
        return self.training_batch(batch, batch_idx) if self.steps_itself else self.training_loss(batch, batch_idx)

    def execute_steps(self, execution: StepsPerExecution) -> None:
        """Make `execution.steps` training steps per Lightning step, by manual optimization. A model that steps
        its optimizers itself takes its clipping settings as its own, and has no accumulation."""
        if self.steps_itself:
            name = type(self).__name__
            check(
                execution.accumulate == 1,
                f"trainer.accumulate_grad_batches={execution.accumulate} does not apply to {name}, which steps its "
                f"optimizers itself; remove it",
            )
            check(
                execution.clip_val is None,
                f"trainer.gradient_clip_val={execution.clip_val} does not apply to {name}, which steps its "
                f"optimizers itself; use model.gradient_clip_val",
            )
        self.execution = execution
        self.automatic_optimization = False

    def on_train_start(self) -> None:
        """Picks the path of the model's own steps for this fit (a subclass overriding this calls super())."""
        self.direct_steps = DirectSteps.of(self.trainer)

    def on_train_end(self) -> None:
        self.direct_steps = None

    def backward_pass(self, loss: torch.Tensor) -> None:
        """`manual_backward(loss)`, for a model that makes its own steps."""
        if self.direct_steps is None:
            self.manual_backward(loss)
        else:
            self.direct_steps.backward(self, loss)

    def stepping_optimizer(self, optimizer: LightningOptimizer) -> LightningOptimizer | DirectOptimizer:
        """What steps `optimizer` (one of `self.optimizers()`) for a model that makes its own steps: itself, or the
        direct path's stand-in for it during a plain fit (also what an `optimizer_step` override receives)."""
        return optimizer if self.direct_steps is None else DirectOptimizer(optimizer, self.direct_steps)

    def on_train_epoch_end(self) -> None:
        """Under manual optimization (the GAN, `steps_per_execution` > 1) epoch schedules are the model's to step."""
        if not self.automatic_optimization and self.scheduler_interval == "epoch":
            step_schedulers(self)

    @property
    def on_logging_step(self) -> bool:
        """Whether Lightning writes this training step's values (every `trainer.log_every_n_steps` steps)."""
        if self.execution_step is not None:  # one of several optimizer steps of this Lightning step
            steps = self.execution_step + 1
            return steps % self.trainer.log_every_n_steps == 0 or bool(self.trainer.fast_dev_run)
        return lightning_logs_this_step(self.trainer) or bool(self.trainer.fast_dev_run)

    @property
    def logging_this_step(self) -> bool:
        """Whether this training step's values reach the loggers: a logging step, and loggers to reach."""
        return bool(self.trainer.loggers) and self.on_logging_step

    def log_training_step(
        self, loss: torch.Tensor, extra: Callable[[], dict[str, Any]], name: str = "train/loss"
    ) -> None:
        """Send the loss (as `name`) and the `extra()` metrics to the loggers on the steps Lightning writes logs.

        `self.log` costs about a millisecond per call on a CPU (it moves Lightning's whole result collection to the
        device each time): with six per-step metrics, a small model's epoch took 1.6x as long as a plain loop. So
        the per-step training values go straight to the loggers every `trainer.log_every_n_steps` steps, on the
        step axis `self.log` uses (as Lightning's LearningRateMonitor does), and `extra` is a callable so they are
        not even computed on the other steps. The loss reaches the progress bar, when one is shown, on those same
        steps (the bar keeps the last value), which is redrawn every 10 batches: both every batch cost 15% of the
        pytorch/examples VAE's epoch (benchmarks/vae_mnist.py --whole-epoch).
        """
        trainer = self.trainer
        if self.logging_this_step:
            values = {name: loss, **extra()}
            metrics = {key: float(torch.as_tensor(value).detach()) for key, value in values.items()}
            step = lightning_logging_step(trainer) if self.execution_step is None else self.execution_step
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=step)
        if trainer.progress_bar_callback is not None and self.on_logging_step:
            self.log(name, loss, prog_bar=True, logger=False)

    def optimizer_parameters(self) -> Iterable[torch.nn.Parameter] | list[dict[str, Any]]:
        """What the optimizer updates: all parameters, or parameter groups (e.g. weight decay on matrices only)."""
        return self.parameters()

    def build_optimizer(
        self,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None,
        parameters: Iterable[torch.nn.Parameter] | list[dict[str, Any]],
    ) -> dict[str, Any]:
        """One optimizer (and its scheduler, if configured) in Lightning's `configure_optimizers` format."""
        built = optimizer(parameters)
        if scheduler is None:
            return {"optimizer": built}
        return {
            "optimizer": built,
            "lr_scheduler": {"scheduler": scheduler(built), "interval": self.scheduler_interval},
        }

    def configure_optimizers(self) -> Any:
        return self.build_optimizer(self.optimizer_factory, self.scheduler_factory, self.optimizer_parameters())

    @contextmanager
    def fixed_noise(self, seed: int) -> Iterator[None]:
        """Draw evaluation noise from `seed`, leaving the training random stream untouched.

        Validation and test metrics of stochastic models then depend on the weights alone: two evaluations of
        one checkpoint agree, and resuming a run does not shift its training randomness.
        """
        on_cpu = self.device.type == "cpu"
        fork = torch.random.fork_rng(devices=[] if on_cpu else [self.device], device_type=self.device.type)
        with fork:
            torch.manual_seed(seed)
            yield
