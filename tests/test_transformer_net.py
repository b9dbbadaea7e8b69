"""The GPT net on its own: causality, KV cache == full recompute, sampling options, init, param groups, errors."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import torch

from genlab.errors import ConfigError, InputError
from genlab.nets import decoding
from genlab.nets.decoding import DecodingBatch, DecodingSequence, Sampling
from genlab.nets.transformer import GPT

VOCAB = 11
BLOCK = 12


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread is faster, and steady when other work shares the CPUs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    kwargs = {"vocab_size": VOCAB, "block_size": BLOCK, "n_layer": 2, "n_head": 2, "n_embd": 16, **overrides}
    return GPT(**kwargs).eval()


def tokens(batch: int, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_loss() -> None:
    model = tiny()
    idx = tokens(3, BLOCK)
    logits, loss = model(idx)
    assert logits.shape == (3, BLOCK, VOCAB) and loss is None
    _, loss = model(idx, targets=tokens(3, BLOCK, seed=2))
    assert loss is not None and loss.ndim == 0
    # Untrained GPT-2 init: near-uniform predictions, loss close to ln(V) nats.
    assert abs(loss.item() - torch.log(torch.tensor(VOCAB)).item()) < 0.2


def test_causality_future_tokens_never_change_past_logits() -> None:
    model = tiny()
    idx = tokens(2, BLOCK)
    logits, _ = model(idx)
    for t in range(BLOCK - 1):
        changed = idx.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1 + torch.arange(BLOCK - t - 1)) % VOCAB
        new_logits, _ = model(changed)
        torch.testing.assert_close(new_logits[:, : t + 1], logits[:, : t + 1], atol=1e-6, rtol=0)
        assert not torch.allclose(new_logits[:, t + 1 :], logits[:, t + 1 :])


def test_incremental_logits_match_full_forward() -> None:
    model = tiny()
    idx = tokens(2, BLOCK)
    full, _ = model(idx)
    cache = model.new_kv_cache(batch_size=2)
    pieces = [model(idx[:, :5], kv_cache=cache)[0]]  # prefill
    pieces.append(model(idx[:, 5:8], kv_cache=cache)[0])  # a chunk after a non-empty cache: explicit mask path
    pieces += [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(8, BLOCK)]  # one token at a time
    assert cache.length == BLOCK
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 1.0}, {"top_k": 4}, {"top_p": 0.8}])
def test_cached_generation_equals_full_recompute(sampling: dict) -> None:
    model = tiny()
    prompt = tokens(3, 4)
    out = {
        use_cache: model.generate(
            prompt, 6, generator=torch.Generator().manual_seed(7), use_cache=use_cache, **sampling
        )
        for use_cache in (True, False)
    }
    assert out[True].shape == (3, 10)
    assert torch.equal(out[True][:, :4], prompt)
    assert torch.equal(out[True], out[False])


@pytest.mark.parametrize("sampling", [{"temperature": 0.0}, {"temperature": 1.5, "top_k": 5}])
def test_generation_past_block_size_falls_back(sampling: dict) -> None:
    model = tiny(n_layer=1)
    prompt = tokens(2, BLOCK - 3)
    kwargs = {"max_new_tokens": 2 * BLOCK, **sampling}
    cached = model.generate(prompt, generator=torch.Generator().manual_seed(3), use_cache=True, **kwargs)
    full = model.generate(prompt, generator=torch.Generator().manual_seed(3), use_cache=False, **kwargs)
    assert cached.shape == (2, BLOCK - 3 + 2 * BLOCK)
    assert torch.equal(cached, full)
    # A prompt longer than the context is cropped, not rejected.
    assert model.generate(tokens(1, 2 * BLOCK), 3).shape == (1, 2 * BLOCK + 3)


def test_sampling_is_reproducible_and_greedy_settings_agree() -> None:
    model = tiny(n_embd=32, n_head=4)
    prompt = tokens(4, 3)

    def sample(**kwargs) -> torch.Tensor:
        return model.generate(prompt, 8, generator=torch.Generator().manual_seed(42), **kwargs)

    assert torch.equal(sample(), sample())
    assert torch.equal(sample(top_k=3, top_p=0.9), sample(top_k=3, top_p=0.9))
    greedy = sample(temperature=0.0)
    assert torch.equal(sample(top_k=1), greedy)
    assert torch.equal(sample(top_p=1e-6), greedy)
    assert torch.equal(sample(temperature=0.0, top_k=5, top_p=0.5), greedy)
    assert not torch.equal(sample(), greedy)
    # Greedy decoding is the argmax of a full forward pass at each step.
    idx = prompt
    for _ in range(8):
        idx = torch.cat((idx, model(idx)[0][:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(idx, greedy)


def test_top_k_and_top_p_restrict_the_candidates() -> None:
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    top_k = GPT._sample(logits, 1.0, 2, None, gen)
    assert set(top_k.unique().tolist()) == {0, 1}
    # softmax ~ [0.64, 0.24, 0.09, ...]: 0.8 needs the first two tokens, 0.5 only the first.
    assert set(GPT._sample(logits, 1.0, None, 0.8, gen).unique().tolist()) == {0, 1}
    assert set(GPT._sample(logits, 1.0, None, 0.5, gen).unique().tolist()) == {0}


def test_tiny_model_overfits_a_fixed_sequence() -> None:
    torch.manual_seed(0)
    model = GPT(vocab_size=VOCAB, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32)
    seq = tokens(1, BLOCK + 1, seed=5)
    x, y = seq[:, :-1], seq[:, 1:]
    optimizer = torch.optim.AdamW(model.configure_param_groups(weight_decay=0.01), lr=3e-3)
    model.train()
    for _ in range(200):
        _, loss = model(x, targets=y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    _, loss = model(x, targets=y)
    assert loss.item() < 0.05
    # And it now reproduces the sequence from its first token.
    assert torch.equal(model.generate(seq[:, :1], BLOCK, temperature=0.0), seq)


def test_loss_ignores_minus_one_targets() -> None:
    model = tiny()
    idx = tokens(2, 6)
    targets = idx.clone()
    targets[:, 3:] = -1
    logits, loss = model(idx, targets=targets)
    expected = torch.nn.functional.cross_entropy(logits[:, :3].reshape(-1, VOCAB), idx[:, :3].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_weights_are_tied_and_initialised_gpt2_style() -> None:
    model = GPT(vocab_size=500, block_size=64, n_layer=8, n_head=4, n_embd=128)
    assert model.lm_head.weight is model.wte.weight
    assert abs(model.wte.weight.std().item() - 0.02) < 0.002
    assert abs(model.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.002
    residual = 0.02 / (2 * 8) ** 0.5
    assert abs(model.blocks[0].mlp.proj.weight.std().item() - residual) < 0.1 * residual
    assert abs(model.blocks[-1].attn.proj.weight.std().item() - residual) < 0.1 * residual
    assert torch.count_nonzero(model.blocks[0].attn.qkv.bias) == 0


def test_num_parameters_counts_the_tied_weight_once() -> None:
    model = tiny()
    total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    untied_total = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert untied_total == total + VOCAB * 16
    assert model.num_parameters(non_embedding=False) == total
    assert model.num_parameters() == total - BLOCK * 16


@pytest.mark.parametrize("bias", [True, False])
def test_param_groups_are_disjoint_and_complete(bias: bool) -> None:
    model = tiny(bias=bias)
    decay, no_decay = model.configure_param_groups(weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    decay_ids = [id(p) for p in decay["params"]]
    no_decay_ids = [id(p) for p in no_decay["params"]]
    all_ids = [id(p) for p in model.parameters()]
    assert len(set(decay_ids)) == len(decay_ids) and len(set(no_decay_ids)) == len(no_decay_ids)
    assert not set(decay_ids) & set(no_decay_ids)
    assert sorted(decay_ids + no_decay_ids) == sorted(all_ids)
    names = {id(p): name for name, p in model.named_parameters()}
    for pid in no_decay_ids:
        assert names[pid].endswith(".bias") or "ln_" in names[pid], names[pid]
    for name, p in model.named_parameters():
        if name.endswith(".bias") or "ln_" in name:
            assert id(p) in no_decay_ids, name
    assert id(model.wte.weight) in decay_ids and id(model.wpe.weight) in decay_ids
    assert any(name.endswith(".bias") for name in names.values()) == bias
    torch.optim.AdamW([decay, no_decay])  # AdamW accepts them as they are


def test_indivisible_heads_raise_a_clear_config_error() -> None:
    with pytest.raises(ConfigError, match=r"n_embd=130 is not divisible by model\.net\.n_head=4") as info:
        GPT(vocab_size=10, block_size=8, n_head=4, n_embd=130)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.vocab_size=0", "data.vocab_size=0 is not allowed: expected an integer > 0"),
        ("data.block_size=-1", "data.block_size=-1 is not allowed: expected an integer > 0"),
        ("model.net.n_layer=0", "model.net.n_layer=0 is not allowed: expected an integer > 0"),
        ("model.net.n_head=0", "model.net.n_head=0 is not allowed: expected an integer > 0"),
        ("model.net.n_embd=0", "model.net.n_embd=0 is not allowed: expected an integer > 0"),
        ("model.net.dropout=1.0", "model.net.dropout=1.0 is not allowed: expected a number >= 0 and < 1"),
        ("model.net.dropout=-0.1", "model.net.dropout=-0.1 is not allowed: expected a number >= 0 and < 1"),
    ],
)
def test_bad_sizes_are_refused_before_the_net_is_built(compose_config, override: str, message: str) -> None:
    """The net's sizes come from the config (model.net.*) and the data (vocabulary, block size)."""
    from genlab.checks import check_config

    with pytest.raises(ConfigError, match=re.escape(message)):
        check_config(compose_config("model=transformer", "data=python_source", override))


def test_too_long_sequences_raise_a_clear_error() -> None:
    model = tiny()
    with pytest.raises(InputError, match=rf"13 tokens is longer than model\.net\.block_size={BLOCK}"):
        model(tokens(1, BLOCK + 1))
    cache = model.new_kv_cache(batch_size=1)
    model(tokens(1, BLOCK - 1), kv_cache=cache)
    with pytest.raises(InputError, match=rf"2 \+ {BLOCK - 1} cached tokens is longer than model\.net\.block_size"):
        model(tokens(1, 2), kv_cache=cache)
    with pytest.raises(InputError, match="KV cache holds 1 sequences"):
        model(tokens(2, 1), kv_cache=model.new_kv_cache(batch_size=1))


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"temperature": -1.0}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 0.0}, "top_p")]
)
def test_bad_sampling_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(InputError, match=match):
        tiny().generate(tokens(1, 2), 1, **kwargs)


def test_dropout_model_trains_and_is_deterministic_in_eval() -> None:
    model = tiny(dropout=0.2)
    idx = tokens(2, BLOCK)
    model.train()
    _, loss = model(idx, targets=idx)
    loss.backward()
    assert model.wte.weight.grad is not None
    model.eval()
    torch.testing.assert_close(model(idx)[0], model(idx)[0], atol=0, rtol=0)


def test_cache_follows_the_autocast_dtype() -> None:
    model = tiny()
    cache = model.new_kv_cache(batch_size=2)
    model(tokens(2, 4), kv_cache=cache)  # float32 prefill
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(tokens(2, 1), kv_cache=cache)
        assert model.generate(tokens(2, 4), 10).shape == (2, 14)
    assert cache.keys[0].dtype == torch.bfloat16 and cache.length == 5
    assert logits.shape == (2, 1, VOCAB)


def test_sequences_decoded_together_draw_what_each_draws_alone() -> None:
    """DecodingBatch (continuous batching in genlab-serve): each sequence has its own slot, position and generator;
    with every step padded to the batch's rows, a sequence's tokens do not depend on the other sequences, on its slot,
    or on who joins and leaves, also past the block size (where a sequence leaves its slot and is recomputed)."""
    model = tiny()

    def start(prompt: list[int], seed: int) -> DecodingSequence:
        (sequence,) = decoding.start(model, prompt, [Sampling(0.9, 5, 0.95, torch.Generator().manual_seed(seed))])
        return sequence

    alone = DecodingBatch(model, rows=4)
    mine = start([1, 2, 3], 7)
    alone.add(mine)
    for _ in range(2 * BLOCK):
        alone.step()

    shared = DecodingBatch(model, rows=4)
    first, long = start([4], 1), start(tokens(1, BLOCK + 3)[0].tolist(), 3)  # the long one starts past the block
    shared.add(first)
    shared.add(long)
    shared.step()
    again, late = start([1, 2, 3], 7), start([5, 6], 2)
    shared.add(again)  # one step later, into slot 1
    for step in range(2 * BLOCK):
        if step == 3:
            shared.add(late)
        if step == 5:
            shared.remove(first)
        shared.step()

    assert again.ids == mine.ids
    assert len(again.ids) == 3 + 1 + 2 * BLOCK and len(long.ids) == BLOCK + 3 + 1 + 2 * BLOCK + 1
    assert len({tuple(s.ids[-BLOCK:]) for s in (mine, first, long, late)}) == 4, "the seeds drew the same tokens"
    assert len(shared) == 3 and shared.free == 4  # the rest left their slots at the block size
    unpadded = DecodingBatch(model, rows=4, pad=False)
    unpadded.add(start([1, 2, 3], 7))
    unpadded.step()
    with pytest.raises(ValueError, match="the batch's 1 slots are all taken"):
        one = DecodingBatch(model, rows=1)
        one.add(start([1], 0))
        one.add(start([2], 0))
