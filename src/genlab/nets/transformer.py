"""A GPT-style decoder-only Transformer language model, with a KV cache for fast sampling (serving's batched
decoding is `genlab.nets.decoding`'s).

Pre-LayerNorm blocks, learned absolute positions, GELU MLP, tied input/output embeddings and GPT-2 initialisation:
small enough to read in one sitting, close enough to GPT-2 that its numbers (loss, parameter count) compare.
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError, InputError
from genlab.settings import PositiveInt, UnitFraction


class RowCache(Protocol):
    """A cache that attends for the layers itself, each row at its own length (`genlab.nets.decoding.SlotCache`)."""

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor: ...


class KVCache:
    """Per-layer keys and values of the tokens seen so far, so decoding one token costs O(T) instead of O(T^2).

    Each layer's buffers hold `block_size` positions; `length` says how many are filled. Each layer writes its new
    keys/values at `length` during a forward pass, and the model advances `length` once all layers are done. The
    buffers are allocated on first use with the keys' device and dtype, so the cache also works under autocast.
    """

    def __init__(self, n_layer: int, batch_size: int, block_size: int) -> None:
        self.keys: list[Tensor | None] = [None] * n_layer
        self.values: list[Tensor | None] = [None] * n_layer
        self.batch_size = batch_size
        self.block_size = block_size
        self.length = 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store the new (B, H, T, D) keys/values of `layer`; return all keys/values up to and including them."""
        keys, values = self.keys[layer], self.values[layer]
        if keys is None or values is None:
            B, H, _, D = k.shape
            keys, values = k.new_zeros(B, H, self.block_size, D), v.new_zeros(B, H, self.block_size, D)
        elif keys.dtype != k.dtype:  # e.g. prefilled in float32, continued under autocast
            keys, values = keys.to(k.dtype), values.to(v.dtype)
        self.keys[layer], self.values[layer] = keys, values
        end = self.length + k.size(2)
        keys[:, :, self.length : end] = k
        values[:, :, self.length : end] = v
        return keys[:, :, :end], values[:, :, :end]

    def advance(self, n: int) -> None:
        """Mark `n` more positions as filled (called once per forward pass, after every layer has written)."""
        self.length += n

    def reset(self) -> None:
        """Forget every cached position; the buffers are reused."""
        self.length = 0

    def copy(self) -> KVCache:
        """An independent cache holding the same positions (e.g. one prefilled prompt for several continuations)."""
        twin = KVCache(len(self.keys), self.batch_size, self.block_size)
        twin.keys = [None if t is None else t.clone() for t in self.keys]
        twin.values = [None if t is None else t.clone() for t in self.values]
        twin.length = self.length
        return twin


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and earlier positions."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.qkv = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)  # a residual projection: scaled down at init
        self.dropout = dropout
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv_cache: KVCache | RowCache | None = None, layer: int = 0) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if kv_cache is not None and not isinstance(kv_cache, KVCache):  # a cache that attends itself (SlotCache)
            y = kv_cache.attend(layer, q, k, v).transpose(1, 2).contiguous().view(B, T, C)
            return self.resid_dropout(self.proj(y))
        past = 0
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.update(layer, k, v)
        mask: Tensor | None = None
        if past > 0 and T > 1:
            # New queries sit at absolute positions past..past+T-1: SDPA's is_causal would align them to position 0.
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=past == 0 and T > 1,  # one new token after a cache attends to every cached position
        )
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward layer, 4x wide, GELU."""

    def __init__(self, n_embd: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.gelu = nn.GELU()
        self.proj = nn.Linear(4 * n_embd, n_embd, bias=bias)  # a residual projection: scaled down at init
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.gelu(self.fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm residual block: the residual stream itself is never normalised, which keeps deep stacks stable."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(self, x: Tensor, kv_cache: KVCache | RowCache | None = None, layer: int = 0) -> Tensor:
        x = x + self.attn(self.ln_1(x), kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only Transformer LM: token ids (B, T) -> next-token logits (B, T, vocab_size).

    The output layer shares its weight with the token embedding (fewer parameters, and as good or better at this
    scale). `block_size` is the longest context: positions are learned, so the model knows no position beyond it.
    """

    data_kind = "text"

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: PositiveInt = 4,
        n_head: PositiveInt = 4,
        n_embd: PositiveInt = 128,
        dropout: UnitFraction = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if n_embd % n_head:
            raise ConfigError(
                f"model.net.n_embd={n_embd} is not divisible by model.net.n_head={n_head}; "
                f"each head gets n_embd / n_head dimensions, so pick n_embd as a multiple of n_head"
            )
        self.vocab_size = vocab_size
        self.block_size = block_size
        self.n_layer = n_layer
        self.n_head = n_head
        self.n_embd = n_embd

        self.wte = nn.Embedding(vocab_size, n_embd)
        self.wpe = nn.Embedding(block_size, n_embd)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied: one tensor, one set of gradients

        self.apply(self._init_weights)
        # GPT-2: each block adds two projections to the residual stream; scale them so its variance stays put.
        residual_std = 0.02 / math.sqrt(2 * n_layer)
        for block in self.blocks:
            nn.init.normal_(block.attn.proj.weight, mean=0.0, std=residual_std)
            nn.init.normal_(block.mlp.proj.weight, mean=0.0, std=residual_std)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def new_kv_cache(self, batch_size: int) -> KVCache:
        """An empty cache for `batch_size` sequences, to pass to `forward` for incremental decoding."""
        return KVCache(self.n_layer, batch_size, self.block_size)

    def forward(
        self,
        idx: Tensor,
        targets: Tensor | None = None,
        kv_cache: KVCache | RowCache | None = None,
        positions: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Logits (B, T, vocab_size) and, given `targets` (B, T), the mean cross-entropy in nats (-1 is ignored).

        With a `KVCache`, `idx` holds only the new tokens: they are placed after the cached ones and appended to them.
        A cache that keeps a length per row (`genlab.nets.decoding.SlotCache`) comes with the tokens' `positions`
        (B, T), and the cache itself places them.
        """
        if idx.dim() != 2 or idx.size(1) == 0:
            raise InputError(f"GPT expects token ids of shape (batch, time) with time >= 1, got {tuple(idx.shape)}")
        B, T = idx.shape
        if positions is None:
            past = 0
            if kv_cache is not None:
                past = kv_cache.length
                if kv_cache.batch_size != B:
                    raise InputError(f"the KV cache holds {kv_cache.batch_size} sequences but the input has {B}")
            if past + T > self.block_size:
                cached = f" + {past} cached" if kv_cache is not None else ""
                raise InputError(
                    f"sequence of {T}{cached} tokens is longer than model.net.block_size={self.block_size}; "
                    f"use shorter sequences or a larger block_size"
                )
            positions = torch.arange(past, past + T, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(positions))
        for layer, block in enumerate(self.blocks):
            x = block(x, kv_cache, layer)
        if isinstance(kv_cache, KVCache):
            kv_cache.advance(T)
        logits = self.lm_head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def generate(
        self,
        idx: Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop_token: int | None = None,
    ) -> Tensor:
        """Append `max_new_tokens` sampled tokens to `idx` (B, T) and return the (B, T + max_new_tokens) ids.

        stop_token: stop early, once every row has produced this token (e.g. the end of a sequence); rows that
        ended sooner go on with tokens their reader ignores.

        temperature == 0 or top_k == 1 is greedy decoding; top_p keeps the smallest set of most likely tokens whose
        probability reaches top_p (nucleus sampling). Call `eval()` first unless dropout noise is wanted.

        use_cache: prefill a KV cache with the prompt once, then feed one token per step. Positions are learned and
        absolute, so a full cache cannot slide: once the sequence reaches block_size tokens, every further step
        recomputes on the last block_size tokens without a cache, exactly as use_cache=False does.
        """
        if temperature < 0:
            raise InputError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0.0 < top_p <= 1.0:
            raise InputError(f"top_p must be in (0, 1], got {top_p}")
        cache = self.new_kv_cache(idx.size(0)) if use_cache else None
        stopped = torch.zeros(idx.size(0), dtype=torch.bool, device=idx.device)
        for step in range(max_new_tokens):
            if cache is not None and step > 0 and cache.length < self.block_size:
                logits, _ = self(idx[:, -1:], kv_cache=cache)
            else:
                context = idx[:, -self.block_size :]
                # Prefill the cache with the prompt; once it is full, recompute without it.
                logits, _ = self(context, kv_cache=cache if cache is not None and step == 0 else None)
            next_token = self._sample(logits[:, -1, :], temperature, top_k, top_p, generator)
            idx = torch.cat((idx, next_token), dim=1)
            if stop_token is not None:
                stopped |= next_token[:, 0] == stop_token
                if bool(stopped.all()):
                    break
        return idx

    @staticmethod
    def _sample(
        logits: Tensor, temperature: float, top_k: int | None, top_p: float | None, generator: torch.Generator | None
    ) -> Tensor:
        """One token id per row (B, 1) from last-position logits (B, V)."""
        if temperature == 0 or top_k == 1:
            return logits.argmax(dim=-1, keepdim=True)
        logits = logits.float() / temperature
        if top_k is not None and top_k < logits.size(-1):
            kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None and top_p < 1.0:
            sorted_logits, order = torch.sort(logits, dim=-1, descending=True, stable=True)
            sorted_probs = sorted_logits.softmax(dim=-1)
            # Drop a token when the more likely ones already reach top_p; the most likely token always stays.
            drop = sorted_probs.cumsum(dim=-1) - sorted_probs >= top_p
            drop[:, 0] = False
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        probs = logits.softmax(dim=-1)
        return torch.multinomial(probs, num_samples=1, generator=generator)

    def num_parameters(self, non_embedding: bool = True) -> int:
        """Parameter count (the tied embedding once). non_embedding leaves out the position embedding only:
        the token embedding also serves as the output layer, so it does real work (the nanoGPT convention)."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def configure_param_groups(self, weight_decay: float) -> list[dict]:
        """Two AdamW groups: decay on matrices and embeddings (dim >= 2), none on biases and LayerNorm gains.

        Decaying gains and biases pulls them towards 0, which only fights the normalisation; each parameter
        (the tied embedding included) appears exactly once.
        """
        params = [p for p in self.parameters() if p.requires_grad]  # parameters() yields a shared tensor once
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
