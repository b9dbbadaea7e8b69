"""genlab's GPT as `transformers`' GPT2LMHeadModel: the same architecture (pre-LayerNorm, learned positions, tied
embeddings), so its weights map one to one; GPT-2's Conv1D layers hold them transposed. genlab's GELU is the exact
one (GPT-2's default is the tanh approximation), and a GPT without biases gets zero biases."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from genlab.nets.transformer import GPT


def gpt2_state(net: GPT) -> dict[str, Tensor]:
    """The GPT2LMHeadModel state dict holding `net`'s weights."""
    state: dict[str, Tensor] = {
        "transformer.wte.weight": net.wte.weight,
        "transformer.wpe.weight": net.wpe.weight,
        "lm_head.weight": net.lm_head.weight,
    }

    def norm(name: str, layer: nn.LayerNorm) -> None:
        state[f"{name}.weight"] = layer.weight
        state[f"{name}.bias"] = layer.bias if layer.bias is not None else torch.zeros_like(layer.weight)

    def conv1d(name: str, layer: nn.Linear) -> None:
        state[f"{name}.weight"] = layer.weight.t()
        state[f"{name}.bias"] = layer.bias if layer.bias is not None else layer.weight.new_zeros(layer.out_features)

    for i, block in enumerate(net.blocks):
        at = f"transformer.h.{i}"
        norm(f"{at}.ln_1", block.ln_1)
        conv1d(f"{at}.attn.c_attn", block.attn.qkv)
        conv1d(f"{at}.attn.c_proj", block.attn.proj)
        norm(f"{at}.ln_2", block.ln_2)
        conv1d(f"{at}.mlp.c_fc", block.mlp.fc)
        conv1d(f"{at}.mlp.c_proj", block.mlp.proj)
    norm("transformer.ln_f", net.ln_f)
    return {key: value.detach().contiguous().clone() for key, value in state.items()}


def to_gpt2(net: GPT) -> nn.Module:
    """A GPT2LMHeadModel computing the same logits as `net` (float32, up to rounding)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=net.vocab_size,
        n_positions=net.block_size,
        n_embd=net.n_embd,
        n_layer=net.n_layer,
        n_head=net.n_head,
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        layer_norm_epsilon=net.ln_f.eps,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=None,
    )
    model = GPT2LMHeadModel(config)
    missing, unexpected = model.load_state_dict(gpt2_state(net), strict=False)
    assert not unexpected and all(key.endswith(".attn.bias") for key in missing), (missing, unexpected)
    return model.eval()
