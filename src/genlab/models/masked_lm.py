"""Masked language models over the GPT's data: MDLM (masked diffusion, a likelihood bound) or BERT's MLM, both
generating by iterative unmasking."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Annotated, Literal, get_args

import torch
import torch.nn.functional as F
from annotated_types import Gt, Lt
from torch import Tensor, nn
from torchmetrics import MeanMetric

from genlab.data.sequences import IGNORE
from genlab.data.spec import DataSpec
from genlab.data.tokenizers import Tokenizer
from genlab.errors import check
from genlab.models.base import GenerativeModel, OptimizerFactory, SchedulerFactory, build_net
from genlab.models.contracts import SequenceGenerator
from genlab.models.lm import TransformerLM
from genlab.models.masked_diffusion import (
    LogLinearSchedule,
    antithetic_times,
    bert_corruption,
    mask_tokens,
    mdlm_nats,
    subs_log_probs,
)
from genlab.models.unmasking import Order, unmask
from genlab.settings import NonNegativeFloat, PositiveInt

Objective = Literal["mdlm", "mlm"]


class MaskedLM(GenerativeModel, SequenceGenerator):
    """A bidirectional Transformer (`model/net=bert`) that predicts masked tokens, over the vocabulary plus [MASK].

    `objective=mdlm` trains on MDLM's negative ELBO (`genlab.models.masked_diffusion`); per evaluation split it logs
    `loss` (the bound, nats per token: the same windows and tokens the GPT scores, so an upper bound on the GPT's
    `loss` of a model as good), `bpc_bound` and `ppl_bound` (the GPT's `bpc` and `ppl` of that bound).
    `objective=mlm` trains BERT's objective on `mask_rate` of the tokens and logs `loss` (the chosen tokens'
    cross-entropy) and `masked_accuracy`: neither is a likelihood, so there is no bpc.

    Both generate with `genlab.models.unmasking` (`sample_steps` steps, `sample_order`). On separate sequences
    (molecules) the rows are the tokens after the begin token, padding included: the model learns to pad after the
    end token, and the bound is normalised by the GPT's tokens (the symbols and the end token).
    """

    judged_metric = "val/loss"
    judged_mode = "min"

    def __init__(
        self,
        spec: DataSpec,
        net: Callable[..., nn.Module],
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: Literal["step", "epoch"] = "step",
        objective: Objective = "mdlm",
        mask_rate: Annotated[float, Gt(0), Lt(1)] = 0.15,
        sample_steps: PositiveInt = 128,
        sample_order: Order = "ancestral",
        weight_decay: NonNegativeFloat = 0.1,
        compile: bool | Literal["cuda"] = False,
        sample_prompts: Sequence[str] = ("\n",),
        sample_tokens: PositiveInt = 200,
        sample_temperature: NonNegativeFloat = 1.0,
        sample_top_k: PositiveInt | None = None,
        sample_sequences: PositiveInt = 16,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        spec.require_kind("text", "MaskedLM")
        self.spec = spec
        self.tokenizer: Tokenizer = spec.tokenizer
        self.tokens_per_char = spec.tokens_per_char or 1.0
        self.objective = objective
        self.mask_rate = mask_rate
        self.schedule = LogLinearSchedule()
        self.sample_steps = sample_steps
        self.sample_order = sample_order
        self.weight_decay = weight_decay
        self.compile_net = compile
        self.sample_prompts = list(sample_prompts)
        self.sample_tokens = sample_tokens
        self.sample_temperature = sample_temperature
        self.sample_top_k = sample_top_k
        self.sample_sequences = sample_sequences
        self.net = build_net(net, "text", "MaskedLM", vocab_size=spec.vocab_size + 1, block_size=spec.shape[0])
        # [MASK]: one past the data's tokens, or a pretrained net's own (model/net=hf_masked)
        own_mask = getattr(self.net, "mask_token_id", None)
        self.mask_id = spec.vocab_size if own_mask is None else own_mask
        self.data_vocab_size = spec.vocab_size
        check(
            not getattr(self.net, "causal", False),
            f"model=masked_lm needs a bidirectional net, but {type(self.net).__name__} attends causally; "
            f"use model/net=bert (or model.net.causal=false)",
        )
        self.block_size = spec.shape[0]
        self.mean = nn.ModuleDict(
            {f"{split}_{name}": MeanMetric() for split in ("val", "test") for name in ("loss", "accuracy")}
        )

    # The GPT's: compiling, parameter groups, prompts, the tokenizer in checkpoints and the kind of data.
    configure_model = TransformerLM.configure_model
    optimizer_parameters = TransformerLM.optimizer_parameters
    prompt_ids = TransformerLM.prompt_ids
    on_save_checkpoint = TransformerLM.on_save_checkpoint
    on_load_checkpoint = TransformerLM.on_load_checkpoint
    whole_sequences = TransformerLM.whole_sequences
    text_samples = TransformerLM.text_samples

    # -- training ---------------------------------------------------------------------------------------------------

    def clean_tokens(self, targets: Tensor) -> tuple[Tensor, Tensor]:
        """x0 and the count of the tokens the GPT scores: a batch's targets, padding as the pad token."""
        real = targets != IGNORE
        pad = getattr(self.tokenizer, "pad_id", 0)
        return targets.masked_fill(~real, pad), real.sum()

    def losses(self, x0: Tensor, count: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """The objective on x0 (per token), for mlm the chosen tokens' accuracy, and the number of tokens both are
        means over (the GPT's tokens for mdlm, the chosen ones for mlm); masks drawn from the global RNG."""
        if self.objective == "mdlm":
            t = antithetic_times(x0.size(0), device=x0.device)
            xt, masked = mask_tokens(x0, self.schedule.mask_rate(t), self.mask_id)
            logits, _ = self.net(xt)
            nats = mdlm_nats(subs_log_probs(logits, xt, self.mask_id), x0, masked, t, self.schedule)
            return nats.sum() / count, None, count
        inputs, chosen = bert_corruption(x0, self.mask_id, self.data_vocab_size, self.mask_rate)
        logits, _ = self.net(inputs)
        logits = logits[chosen].float()
        logits[:, self.mask_id] = float("-inf")
        labels = x0[chosen]
        n = chosen.sum()
        loss = F.cross_entropy(logits, labels, reduction="sum") / n.clamp(min=1)
        return loss, (logits.argmax(dim=-1) == labels).sum() / n.clamp(min=1), n

    def training_loss(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self.losses(*self.clean_tokens(batch[1]))
        self.log_training_step(loss, dict)
        return loss

    def _evaluate(self, batch: tuple[Tensor, Tensor], batch_idx: int, split: str) -> None:
        x0, count = self.clean_tokens(batch[1])
        with self.fixed_noise(batch_idx):  # the same masks and times at every evaluation
            loss, accuracy, n = self.losses(x0, count)
        self.mean[f"{split}_loss"].update(loss, weight=n)
        if accuracy is not None:
            self.mean[f"{split}_accuracy"].update(accuracy, weight=n)

    def _log_split(self, split: str) -> None:
        loss = self.mean[f"{split}_loss"].compute()
        if self.objective == "mdlm":
            values = {
                f"{split}/loss": loss,
                f"{split}/bpc_bound": loss * self.tokens_per_char / math.log(2),
                f"{split}/ppl_bound": torch.exp(loss),
            }
        else:
            values = {f"{split}/loss": loss, f"{split}/masked_accuracy": self.mean[f"{split}_accuracy"].compute()}
        for metric in self.mean.values():
            metric.reset()
        self.log_dict(values, sync_dist=True)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    # -- generation -------------------------------------------------------------------------------------------------

    def denoise(self, x: Tensor) -> Tensor:
        """log p(x0 | x) under SUBS: what the sampler draws from."""
        logits, _ = self.net(x)
        return subs_log_probs(logits, x, self.mask_id)

    @torch.no_grad()
    def fill(
        self,
        x: Tensor,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        sampler: str | None = None,
    ) -> Tensor:
        """x (B, T) with its [MASK] positions (`mask_id`) generated and the others kept: continuation, infilling.
        `steps` and `sampler` (an order: ancestral or confidence) default to the run's sample_steps, sample_order."""
        order = sampler or self.sample_order
        check(order in get_args(Order), f"sampler={order} is not a masked LM's order; use one of {get_args(Order)}")
        return unmask(
            self.denoise,
            x,
            self.mask_id,
            steps or self.sample_steps,
            order,  # type: ignore[arg-type]
            temperature,
            top_k,
            top_p,
            generator,
        )

    @torch.no_grad()
    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        steps: PositiveInt | None = None,
        sampler: str | None = None,
    ) -> str:
        """The prompt's continuation (without the prompt): the new tokens unmasked after the prompt, a context
        window at a time (each later window keeps the last half context of the text so far)."""
        ids = self.prompt_ids(prompt)
        context = len(ids)
        while len(ids) - context < max_new_tokens:
            needed = context + max_new_tokens - len(ids)
            kept = ids if len(ids) + needed <= self.block_size else ids[-(self.block_size // 2) :]
            new = min(needed, self.block_size - len(kept))
            x = torch.tensor([kept + [self.mask_id] * new], dtype=torch.long, device=self.device)
            ids += self.fill(x, temperature, top_k, top_p, generator, steps, sampler)[0, len(kept) :].tolist()
        return self.tokenizer.decode(ids[context:])

    @torch.no_grad()
    def generate_sequences(
        self,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        steps: PositiveInt | None = None,
        sampler: str | None = None,
        batch_size: int = 500,
    ) -> list[str]:
        """`n` whole sequences: a context of [MASK] unmasked, read up to its first end token."""
        texts: list[str] = []
        while len(texts) < n:
            count = min(batch_size, n - len(texts))
            x = torch.full((count, self.block_size), self.mask_id, dtype=torch.long, device=self.device)
            out = self.fill(x, temperature, top_k, top_p, generator, steps, sampler)
            texts.extend(self.tokenizer.decode(row.tolist()) for row in out.cpu())
        return texts
