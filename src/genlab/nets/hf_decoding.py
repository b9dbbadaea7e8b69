"""Decoding a `transformers` net (`genlab.nets.hf.HFCausalLM`) step by step for genlab-serve, with the interface of
`genlab.nets.decoding`'s `start` and `DecodingBatch`.

Each sequence keeps its own transformers KV cache and takes one pass per step: requests still join and leave the
batch between two tokens (continuous batching), but their tokens are not computed in one pass. That makes every
sequence's tokens independent of its company (batch-invariant, whatever `pad` says) at the cost of throughput with
many concurrent completions; genlab's GPT decodes all slots in one pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from genlab.nets.decoding import Sampling
from genlab.nets.transformer import GPT

if TYPE_CHECKING:
    from genlab.nets.hf import HFCausalLM


@dataclass
class CachedSequence:
    """A sequence being decoded: its ids so far (the last one not yet in its cache) and its own cache."""

    ids: list[int]
    cache: Any
    sampling: Sampling

    def draw(self, logits: Tensor) -> None:
        s = self.sampling
        self.ids.append(int(GPT._sample(logits, s.temperature, s.top_k, s.top_p, s.generator)))


def device_of(net: HFCausalLM) -> torch.device:
    return next(net.parameters()).device


@torch.no_grad()
def start_cached(net: HFCausalLM, prompt: Sequence[int], samplings: Sequence[Sampling]) -> list[CachedSequence]:
    """Prefill the prompt (its last block_size tokens) once; each continuation gets a copy of that cache."""
    import copy

    context = torch.tensor([list(prompt)[-net.block_size :]], dtype=torch.long, device=device_of(net))
    out = net.model(input_ids=context, use_cache=True)
    sequences = []
    for sampling in samplings:
        sequence = CachedSequence(list(prompt), copy.deepcopy(out.cache), sampling)
        sequence.draw(out.logits[:, -1, :])
        sequences.append(sequence)
    return sequences


class CachedBatch:
    """Up to `rows` sequences, each advanced by one token per `step` through its own cache (see the module)."""

    def __init__(self, net: HFCausalLM, rows: int, pad: bool = True) -> None:
        self.net = net
        self.rows = rows
        self.sequences: list[CachedSequence] = []

    @property
    def free(self) -> int:
        return self.rows - len(self.sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def add(self, sequence: CachedSequence) -> None:
        if not self.free:
            raise ValueError(f"the batch's {self.rows} slots are all taken")
        self.sequences.append(sequence)

    def remove(self, sequence: CachedSequence) -> None:
        self.sequences.remove(sequence)

    @torch.no_grad()
    def step(self) -> None:
        """Append one token to every sequence; one whose context is full is recomputed on its last block_size."""
        net, device = self.net, device_of(self.net)
        for sequence in self.sequences:
            if len(sequence.ids) < net.block_size:
                token = torch.tensor([sequence.ids[-1:]], device=device)
                out = net.model(input_ids=token, cache=sequence.cache, use_cache=True)
            else:
                out = net.model(input_ids=torch.tensor([sequence.ids[-net.block_size :]], device=device))
            sequence.draw(out.logits[:, -1, :])
