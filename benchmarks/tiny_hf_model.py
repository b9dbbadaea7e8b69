"""Write a tiny Hugging Face causal LM folder (config, weights, a byte-level BPE tokenizer trained here): a stand-in
for a downloaded GPT-2 in the docs' commands and the tests, built without any download; `--arch bert` writes a masked
LM (its tokenizer with a [MASK] token) instead.

    python benchmarks/tiny_hf_model.py OUT [--arch gpt2|llama|bert] [--text FILE]
"""

from __future__ import annotations

import argparse
from pathlib import Path

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20


def save_tiny_model(out: Path, arch: str = "gpt2", text: str = TEXT, vocab_size: int = 300) -> Path:
    """A model of a few thousand parameters and its tokenizer, saved with `save_pretrained` into `out`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<|endoftext|>", *(["[MASK]"] if arch == "bert" else [])],
        show_progress=False,
    )
    bpe.train_from_iterator([text], trainer=trainer)
    masked = {"mask_token": "[MASK]"} if arch == "bert" else {}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|endoftext|>", bos_token="<|endoftext|>", **masked
    )
    sizes = {
        "gpt2": {"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 64},
        "llama": {
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "max_position_embeddings": 64,
        },
        "bert": {
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "hidden_size": 16,
            "intermediate_size": 32,
            "max_position_embeddings": 64,
        },
    }[arch]
    eos = tokenizer.eos_token_id
    config = AutoConfig.for_model(arch, vocab_size=len(tokenizer), bos_token_id=eos, eos_token_id=eos, **sizes)
    (AutoModelForMaskedLM if arch == "bert" else AutoModelForCausalLM).from_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--arch", choices=["gpt2", "llama", "bert"], default="gpt2")
    parser.add_argument("--text", type=Path, help="train the tokenizer on this file (default: a few lines of Hamlet)")
    args = parser.parse_args()
    text = args.text.read_text(encoding="utf-8") if args.text else TEXT
    print(save_tiny_model(args.out, args.arch, text))


if __name__ == "__main__":
    main()
