"""Causal Transformer language model: next-token cross-entropy, nanoGPT's optimizer and schedule, KV-cache sampling."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn
from torchmetrics import MeanMetric

from genlab.data.sequences import IGNORE
from genlab.data.spec import DataSpec
from genlab.data.tokenizers import SymbolTokenizer, Tokenizer, tokenizer_from_state
from genlab.models.base import GenerativeModel, OptimizerFactory, SchedulerFactory, build_net
from genlab.models.contracts import IncrementalDecoder, SequenceGenerator
from genlab.nets.decoding import DecodingBatch, DecodingSequence, Sampling, start
from genlab.nets.hf import HFCausalLM
from genlab.settings import NonNegativeFloat, PositiveInt


class TransformerLM(GenerativeModel, SequenceGenerator, IncrementalDecoder):
    """GPT-style language model over the data's tokens.

    Logged: `train/loss`, and per evaluation split `loss` (nats per token, the token-weighted mean over the split),
    `bpc` (bits per character: loss x tokens per character of held-out text / ln 2; equal to loss / ln 2 for the
    char tokenizer), `ppl` (exp of the mean loss) and, where the data counts other units, `loss_per_<unit>` (loss x
    tokens per unit of the split: music has `loss_per_note` and `loss_per_quarter`, nats per quarter note).

    On a corpus of separate sequences (a `SymbolTokenizer`: molecules, pieces) it learns whole sequences, padding
    ignored by the loss, and generates them from the begin token until the end token (`generate_sequences`).
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
        weight_decay: NonNegativeFloat = 0.1,
        compile: bool | Literal["cuda"] = False,
        sample_prompts: Sequence[str] = ("\n",),
        sample_tokens: PositiveInt = 200,
        sample_temperature: NonNegativeFloat = 0.8,
        sample_top_k: PositiveInt | None = None,
        sample_sequences: PositiveInt = 16,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval)
        spec.require_kind("text", "TransformerLM")
        self.spec = spec
        self.tokenizer: Tokenizer = spec.tokenizer
        self.tokens_per_char = spec.tokens_per_char or 1.0
        self.weight_decay = weight_decay
        self.compile_net = compile
        self.sample_prompts = list(sample_prompts)
        self.sample_tokens = sample_tokens
        self.sample_temperature = sample_temperature
        self.sample_top_k = sample_top_k
        self.sample_sequences = sample_sequences
        self.net = build_net(net, "text", "TransformerLM", vocab_size=spec.vocab_size, block_size=spec.shape[0])
        self.mean_loss = nn.ModuleDict({split: MeanMetric() for split in ("val", "test")})

    def configure_model(self) -> None:
        """`compile="cuda"` compiles on CUDA devices only: on a CPU, inductor's C++ build takes minutes before the
        first step and these nets gain little from it, so a GPU recipe run with `trainer=cpu` starts at once."""
        if self.compile_net is True or (
            self.compile_net == "cuda" and self.trainer.strategy.root_device.type == "cuda"
        ):
            self.net.compile()  # in place: parameter names, and so checkpoints, stay those of the plain net

    def optimizer_parameters(self) -> list[dict[str, Any]]:
        return self.net.configure_param_groups(self.weight_decay)

    def training_loss(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        inputs, targets = batch
        _, loss = self.net(inputs, targets)
        self.log_training_step(loss, dict)
        return loss

    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], split: str) -> None:
        inputs, targets = batch
        _, loss = self.net(inputs, targets)
        self.mean_loss[split].update(loss.float(), weight=(targets != IGNORE).sum())

    def _log_split(self, split: str) -> None:
        loss = self.mean_loss[split].compute()
        self.mean_loss[split].reset()
        self.log_dict(
            {
                f"{split}/loss": loss,
                f"{split}/bpc": loss * self.tokens_per_char / math.log(2),
                f"{split}/ppl": torch.exp(loss),
                **{
                    f"{split}/loss_per_{unit}": loss * per_split[split]
                    for unit, per_split in self.spec.tokens_per_unit.items()
                    if split in per_split
                },
            },
            sync_dist=True,  # already equal on every process (the metric synced); this only silences Lightning
        )

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    # -- generation -------------------------------------------------------------------------------------------------

    @property
    def whole_sequences(self) -> bool:
        """Whether the data is separate sequences with begin/end tokens (else one running text)."""
        return isinstance(self.tokenizer, SymbolTokenizer)

    @torch.no_grad()
    def generate_sequences(
        self,
        n: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        batch_size: int = 500,
    ) -> list[str]:
        """`n` whole sequences as text, each from the begin token to (without) the end token, `batch_size` at a
        time with the KV cache; a sequence that reaches the context length without ending is cut there."""
        texts: list[str] = []
        while len(texts) < n:
            count = min(batch_size, n - len(texts))
            start = torch.full((count, 1), self.tokenizer.bos_id, dtype=torch.long, device=self.device)
            out = self.net.generate(
                start,
                self.net.block_size,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                generator=generator,
                stop_token=self.tokenizer.eos_id,
            )
            texts.extend(self.tokenizer.decode(row[1:].tolist()) for row in out.cpu())
        return texts

    @torch.no_grad()
    def generate_text(
        self,
        prompt: str,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> str:
        """The prompt's continuation (without the prompt), sampled with the KV cache."""
        ids = self.prompt_ids(prompt)
        idx = torch.tensor([ids], dtype=torch.long, device=self.device)
        out = self.net.generate(
            idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
        )
        return self.tokenizer.decode(out[0, len(ids) :].tolist())

    def prompt_ids(self, prompt: str) -> list[int]:
        """The prompt's token ids; an empty prompt starts from a newline."""
        return self.tokenizer.encode(prompt) or self.tokenizer.encode("\n")

    def start_sequences(self, prompt_ids: Sequence[int], samplings: Sequence[Sampling]) -> list[DecodingSequence]:
        """Continuations of one prompt, one per `Sampling`, each with its first token drawn; genlab-serve decodes
        many of them together in a `decoding_batch`."""
        if isinstance(self.net, HFCausalLM):  # a transformers net: its own caches (genlab.nets.hf_decoding)
            from genlab.nets.hf_decoding import start_cached

            return start_cached(self.net, prompt_ids, samplings)
        return start(self.net, prompt_ids, samplings)

    def decoding_batch(self, rows: int, pad: bool = True) -> DecodingBatch:
        """An empty batch of `rows` slots in which started sequences take their next tokens together."""
        if isinstance(self.net, HFCausalLM):
            from genlab.nets.hf_decoding import CachedBatch

            return CachedBatch(self.net, rows, pad)
        return DecodingBatch(self.net, rows, pad)

    def text_samples(self, seed: int) -> dict[str, str]:
        """One continuation per configured prompt, each from its own fixed seed; for separate sequences,
        `sample_sequences` of them from `seed`, one a line."""
        if self.whole_sequences:
            generator = torch.Generator(device=self.device).manual_seed(seed)
            texts = self.generate_sequences(
                self.sample_sequences, self.sample_temperature, top_k=self.sample_top_k, generator=generator
            )
            return {"sequences": "\n".join(texts)}
        samples = {}
        for i, prompt in enumerate(self.sample_prompts):
            generator = torch.Generator(device=self.device).manual_seed(seed + i)
            text = self.generate_text(
                prompt, self.sample_tokens, self.sample_temperature, self.sample_top_k, generator=generator
            )
            samples[f"prompt_{i}"] = prompt + text
        return samples

    # -- checkpoints carry the tokenizer, so a run folder can be sampled without its corpus ------------------------

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["genlab_tokenizer"] = self.tokenizer.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "genlab_tokenizer" in checkpoint:
            self.tokenizer = tokenizer_from_state(checkpoint["genlab_tokenizer"])
