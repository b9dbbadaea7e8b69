"""Decoding many sequences together for genlab-serve: each sequence started from its prompt's prefilled cache
(`start`), then one token per step for all of them in a `DecodingBatch` (continuous batching), through `GPT.forward`
with a `SlotCache` that keeps one row per sequence, each at its own position."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from genlab.nets.transformer import GPT, KVCache


class SlotCache:
    """The KV cache of a batch of independent sequences, one slot (row) each, every slot with its own length.

    A decoding step writes each row's new keys/values at its slot's own position and attends over the slot's
    positions, masked to the filled ones. With `whole_slots` it attends over all block_size positions, so the step's
    shapes are the same whatever the lengths and each row's numbers depend on its own slot only (see
    `DecodingBatch`); without, only up to the longest filled slot (less to read while sequences are short).
    """

    def __init__(
        self, n_layer: int, slots: int, block_size: int, like: Tensor, n_head: int, whole_slots: bool = True
    ) -> None:
        shape = (slots, n_head, block_size, like.size(-1) // n_head)
        self.keys = [like.new_zeros(shape) for _ in range(n_layer)]
        self.values = [like.new_zeros(shape) for _ in range(n_layer)]
        self.lengths = torch.zeros(slots, dtype=torch.long, device=like.device)
        self.block_size = block_size
        self.whole_slots = whole_slots

    def load(self, slot: int, cache: KVCache) -> None:
        """Put a one-row cache (e.g. a prefilled prompt) into `slot`."""
        for layer, (keys, values) in enumerate(zip(cache.keys, cache.values, strict=True)):
            assert keys is not None and values is not None, "load a cache that has been filled"
            self.keys[layer][slot, :, : cache.length] = keys[0, :, : cache.length]
            self.values[layer][slot, :, : cache.length] = values[0, :, : cache.length]
        self.lengths[slot] = cache.length

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Attention of the first B slots' new (B, H, 1, D) queries to their own keys/values and the new ones."""
        B = q.size(0)
        at = self.lengths[:B].clamp(max=self.block_size - 1)  # a full slot (left to recompute) writes harmlessly
        rows = torch.arange(B, device=q.device)
        keys, values = self.keys[layer][:B], self.values[layer][:B]
        keys[rows, :, at] = k[:, :, 0]
        values[rows, :, at] = v[:, :, 0]
        span = self.block_size if self.whole_slots else int(at.max()) + 1
        keys, values = keys[:, :, :span], values[:, :, :span]
        hidden = torch.arange(span, device=q.device) > at[:, None]  # (B, span)
        # Written out rather than SDPA: for one query per row, CPU SDPA with a mask is many times slower.
        scores = (q @ keys.transpose(-2, -1)) * q.size(-1) ** -0.5
        return scores.masked_fill(hidden[:, None, None, :], float("-inf")).softmax(dim=-1) @ values


@dataclass
class Sampling:
    """How one sequence draws its tokens: temperature (0 = greedy), top_k, top_p, and its own random generator."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    generator: torch.Generator | None = None


@dataclass
class DecodingSequence:
    """A sequence decoded step by step (`GPT.start`, then in a `DecodingBatch`): its token ids so far (the last one
    not yet in its cache), its prefilled prompt's cache, and how it draws its tokens."""

    ids: list[int]
    prompt_cache: KVCache
    sampling: Sampling

    def draw(self, logits: Tensor) -> None:
        """Append the token drawn from last-position logits (1, vocab_size)."""
        s = self.sampling
        self.ids.append(int(GPT._sample(logits, s.temperature, s.top_k, s.top_p, s.generator)))


@torch.no_grad()
def start(net: GPT, prompt: Sequence[int], samplings: Sequence[Sampling]) -> list[DecodingSequence]:
    """Prefill one prompt (its last block_size tokens) once and draw the first token of one continuation per
    `Sampling`; decode them further in a `DecodingBatch`."""
    context = torch.tensor([list(prompt)[-net.block_size :]], dtype=torch.long, device=net.wte.weight.device)
    cache = net.new_kv_cache(1)
    logits, _ = net(context, kv_cache=cache)
    sequences = [DecodingSequence(list(prompt), cache, sampling) for sampling in samplings]
    for sequence in sequences:
        sequence.draw(logits[:, -1, :])
    return sequences


class DecodingBatch:
    """Sequences decoded together, one token each per `step`, in one KV cache of `rows` slots: continuous batching,
    where sequences join (`add`) and leave (`remove`) between steps.

    Every sequence draws with its own settings and generator. Batched matrix products are not bitwise
    batch-invariant: a row's results move in the last bits with the number of rows, but not with what the other rows
    hold. So with `pad` every step runs all `rows` slots (empty ones as padding) and attends over whole slots, masked:
    its shapes never change and a sequence's tokens are the same whichever sequences share its batch. Without `pad`
    a step runs the slots up to the last one in use, over their filled positions only (faster while few slots are
    used or sequences are short; tokens may then change, rarely, with the company). A sequence whose context reaches
    block_size leaves its slot and is recomputed on its last block_size tokens each step, as `GPT.generate` does.
    """

    def __init__(self, net: GPT, rows: int, pad: bool = True) -> None:
        self.net = net
        self.pad = pad
        self.cache = SlotCache(net.n_layer, rows, net.block_size, net.wte.weight, net.n_head, whole_slots=pad)
        self.slots: list[DecodingSequence | None] = [None] * rows
        self.full: list[DecodingSequence] = []

    @property
    def free(self) -> int:
        return self.slots.count(None)

    def __len__(self) -> int:
        return len(self.slots) - self.free + len(self.full)

    def add(self, sequence: DecodingSequence) -> None:
        """Take a started sequence (its prompt cache goes into a free slot)."""
        if sequence.prompt_cache.length >= self.net.block_size:
            self.full.append(sequence)
            return
        if not self.free:
            raise ValueError(f"the batch's {len(self.slots)} slots are all taken")
        slot = self.slots.index(None)  # the lowest free slot, so that unpadded steps stay short
        self.slots[slot] = sequence
        self.cache.load(slot, sequence.prompt_cache)

    def remove(self, sequence: DecodingSequence) -> None:
        if sequence in self.full:
            self.full.remove(sequence)
        else:
            self.vacate(self.slots.index(sequence))

    def vacate(self, slot: int) -> None:
        self.slots[slot] = None
        self.cache.lengths[slot] = 0

    @torch.no_grad()
    def step(self) -> None:
        """Append one token to every sequence."""
        net, cache = self.net, self.cache
        recomputed = list(self.full)
        used = [b for b, sequence in enumerate(self.slots) if sequence is not None]
        if used:
            rows = len(self.slots) if self.pad else used[-1] + 1
            tokens = torch.tensor([[s.ids[-1] if s is not None else 0] for s in self.slots[:rows]])
            positions = cache.lengths[:rows, None].clamp(max=net.block_size - 1)
            logits = net(tokens.to(positions.device), kv_cache=cache, positions=positions)[0][:, -1, :]
            cache.lengths[used] += 1
            for b in used:
                self.slots[b].draw(logits[b : b + 1])
            for b in (cache.lengths[:rows] >= net.block_size).nonzero().flatten().tolist():
                if self.slots[b] is not None:  # no room for the next token: recomputed from now on
                    self.full.append(self.slots[b])
                    self.vacate(b)
        for sequence in recomputed:
            window = torch.tensor([sequence.ids[-net.block_size :]], device=net.wte.weight.device)
            sequence.draw(net(window)[0][:, -1, :])
