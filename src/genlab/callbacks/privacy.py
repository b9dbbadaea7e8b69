"""Differentially private training (DP-SGD, Abadi et al. 2016) with Opacus, from one setting: `privacy=dp`.

Opacus clips each example's gradient to `max_grad_norm` and adds Gaussian noise of `noise_multiplier` times that
norm to the batch's sum; batches are drawn by Poisson sampling (each example joins a batch with probability
`sample_rate`), as its accountant assumes. The accountant turns (noise, sample rate, steps) into the epsilon spent
at `delta`. Here a callback does it around the model, which stays as written: the model's parameters get Opacus'
per-example gradient hooks, its optimizer becomes Opacus' DPOptimizer, the training loader a Poisson one.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import pytorch_lightning as pl
import torch
from annotated_types import Gt, Lt
from pytorch_lightning.utilities import rank_zero_info

from genlab.errors import ConfigError
from genlab.extras import import_extra
from genlab.models.gan import GAN
from genlab.models.lm import TransformerLM
from genlab.settings import PositiveFloat

Delta = Annotated[float, Gt(0), Lt(1)]


def epsilon_of(history: list[tuple[float, float, int]], delta: float, accountant: str) -> float:
    """The epsilon at `delta` of a history of (noise multiplier, sample rate, steps), by a fresh Opacus accountant
    of that name: what anyone can recompute from the numbers a run records."""
    accountants = import_extra("opacus.accountants", "privacy", "privacy=dp")
    fresh = accountants.create_accountant(accountant)
    fresh.history = [tuple(entry) for entry in history if entry[2] > 0]
    return float(fresh.get_epsilon(delta)) if fresh.history else 0.0


class DifferentialPrivacy(pl.Callback):
    """Trains the VAE or the diffusion model with DP-SGD, or the GAN's discriminator (`private_part`); `summary()`
    puts the privacy spent in metrics.json and the manifest with what an independent accountant needs (noise
    multiplier, sample rate, steps, delta, accountant).

    `epsilon` alone: the noise multiplier is chosen (Opacus' get_noise_multiplier) so that the planned steps
    (trainer.max_epochs / max_steps, limit_train_batches included) spend exactly `epsilon`. `noise_multiplier` alone:
    training spends what it spends. Both: a run whose planned steps would spend more than `epsilon` is refused
    before it starts (a resume with more epochs too). `delta` defaults to 1 / (training examples). `train/epsilon`
    is logged after every epoch. The accountant's history is saved in checkpoints, so a resumed run continues the
    accounting.
    """

    def __init__(
        self,
        epsilon: PositiveFloat | None = None,
        delta: Delta | None = None,
        max_grad_norm: PositiveFloat = 1.0,
        noise_multiplier: PositiveFloat | None = None,
        accountant: Literal["rdp", "prv", "gdp"] = "rdp",
        seed: int = 0,
    ) -> None:
        if epsilon is None and noise_multiplier is None:
            raise ConfigError("privacy=dp needs privacy.epsilon (a budget) or privacy.noise_multiplier; set one")
        self.opacus = import_extra("opacus", "privacy", "privacy=dp")  # here: a missing extra stops the run first
        self.epsilon = epsilon
        self.delta = delta
        self.max_grad_norm = max_grad_norm
        self.noise_multiplier = noise_multiplier
        self.accountant = accountant
        self.seed = seed
        self.engine: Any = None
        self.sample_rate: float | None = None
        self.history: list[tuple[float, float, int]] = []  # restored from a checkpoint when resuming

    # -- set-up -------------------------------------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit" or self.engine is not None:
            return
        if isinstance(pl_module, TransformerLM):
            raise ConfigError("privacy=dp covers model=vae, model=diffusion and model=gan; use privacy=none")
        if isinstance(pl_module, GAN) and (
            (pl_module.loss == "wgan_gp" and pl_module.gp_weight > 0) or pl_module.r1_weight > 0
        ):
            raise ConfigError(
                "privacy=dp: Opacus cannot clip the per-example gradients of a gradient penalty; "
                "use model.loss=nonsaturating or hinge with model.r1_weight=0, or privacy=none"
            )
        if trainer.world_size > 1:
            raise ConfigError("privacy=dp runs on one device (its accounting is per process); use trainer.devices=1")
        if trainer.accumulate_grad_batches != 1:
            raise ConfigError(
                "privacy=dp accounts one Poisson-sampled batch per optimizer step; "
                "use trainer.accumulate_grad_batches=1 (raise data.batch_size instead)"
            )
        module, _ = private_part(pl_module)
        for layer in module.modules():  # an in-place activation would overwrite the output Opacus' hooks keep
            if isinstance(layer, torch.nn.ReLU | torch.nn.LeakyReLU):
                layer.inplace = False
        errors = self.opacus.validators.ModuleValidator.validate(module, strict=False)
        if errors:
            raise ConfigError(
                f"privacy=dp: Opacus cannot compute per-example gradients of this model ({errors[0]}); "
                "pick a model/net without batch norm (the GAN: model.net.d_norm=layer or model/net=mlp_gan), "
                "or privacy=none"
            )
        datamodule = trainer.datamodule
        plain = datamodule.train_dataloader
        poisson = self.opacus.data_loader.DPDataLoader
        datamodule.train_dataloader = lambda: poisson.from_data_loader(plain())
        if self.delta is None:
            self.delta = 1 / len(plain().dataset)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.datamodule.train_dataloader()
        self.sample_rate = 1 / len(loader)
        if not math.isfinite(trainer.estimated_stepping_batches):
            raise ConfigError("privacy=dp accounts for a planned number of steps: set trainer.max_epochs or max_steps")
        planned = int(trainer.estimated_stepping_batches)
        done = sum(steps for _, _, steps in self.history)
        if self.noise_multiplier is None:
            self.noise_multiplier = self.opacus.accountants.utils.get_noise_multiplier(
                target_epsilon=self.epsilon,
                target_delta=self.delta,
                sample_rate=self.sample_rate,
                steps=planned,
                accountant=self.accountant,
            )
        remaining = max(0, planned - done)  # private steps, as the accountant's history counts them
        spent = epsilon_of(
            [*self.history, (self.noise_multiplier, self.sample_rate, remaining)], self.delta, self.accountant
        )
        if self.epsilon is not None and spent > self.epsilon * (1 + 1e-3):
            raise ConfigError(
                f"privacy=dp: {done + remaining} private steps at noise multiplier {self.noise_multiplier:.4g} and "
                f"sample rate {self.sample_rate:.4g} would spend epsilon {spent:.3f} > privacy.epsilon={self.epsilon}; "
                "lower trainer.max_epochs or max_steps, raise privacy.noise_multiplier, or leave it null"
            )
        self.engine = self.opacus.PrivacyEngine(accountant=self.accountant)
        self.engine.accountant.history = list(self.history)
        module, index = private_part(pl_module)
        optimizers = list(trainer.strategy.optimizers)
        if len(optimizers) <= index:
            raise ConfigError("privacy=dp needs the optimizer of the model's part that sees data; use privacy=none")
        hooks, optimizers[index], _ = self.engine.make_private(
            module=module,
            optimizer=optimizers[index],
            data_loader=loader,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=False,  # the loader already samples by Poisson
            wrap_model=False,
        )
        trainer.strategy.optimizers = optimizers
        if module is not pl_module:  # the GAN: its generator's step runs backward through the frozen discriminator
            module.register_forward_pre_hook(lambda *_: setattr(hooks, "hooks_enabled", trains(module)))
        rank_zero_info(
            f"Differential privacy: noise multiplier {self.noise_multiplier:.4g}, sample rate {self.sample_rate:.4g}, "
            f"max grad norm {self.max_grad_norm}, delta {self.delta:.3g}; {remaining} steps will bring epsilon to "
            f"{spent:.3f} ({self.accountant})"
        )

    # -- accounting ---------------------------------------------------------------------------------------------------

    @property
    def spent(self) -> float:
        """Epsilon at delta so far."""
        return epsilon_of(self.recorded_history, self.delta, self.accountant) if self.sample_rate else 0.0

    @property
    def recorded_history(self) -> list[tuple[float, float, int]]:
        return [tuple(entry) for entry in (self.engine.accountant.history if self.engine else self.history)]

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.log("train/epsilon", self.spent)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.recorded_history, "noise_multiplier": self.noise_multiplier, "delta": self.delta}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [tuple(entry) for entry in state_dict["history"]]
        self.noise_multiplier = state_dict["noise_multiplier"]
        self.delta = state_dict["delta"]

    def summary(self) -> dict[str, Any]:
        """The privacy spent and what recomputes it, for metrics.json; written to the manifest too."""
        if self.engine is None:
            return {}
        history = self.recorded_history
        record = {
            "epsilon": self.spent,
            "delta": self.delta,
            "target_epsilon": self.epsilon,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": sum(steps for _, _, steps in history),
            "history": [list(entry) for entry in history],
            "max_grad_norm": self.max_grad_norm,
            "accountant": self.accountant,
            "poisson_sampling": True,
        }
        if not math.isfinite(record["epsilon"]):
            record["epsilon"] = None
        return {"privacy": record}


def private_part(model: pl.LightningModule) -> tuple[torch.nn.Module, int]:
    """The part of a model that sees the training data, and the index of its optimizer: the whole VAE or diffusion
    model; the GAN's discriminator (its generator learns only from the discriminator's outputs, so it is private by
    post-processing, as in DP-GAN work)."""
    return (model.discriminator, 1) if isinstance(model, GAN) else (model, 0)


def trains(module: torch.nn.Module) -> bool:
    """Whether the module's parameters take gradients now (Lightning freezes the GAN's discriminator for G's step)."""
    return any(parameter.requires_grad for parameter in module.parameters())
