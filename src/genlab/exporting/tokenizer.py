"""genlab's tokenizers as `transformers` tokenizers (a `tokenizers` pipeline that encodes to the same ids), so an
exported folder opens with `AutoTokenizer`; a pretrained net's own tokenizer is saved as it is."""

from __future__ import annotations

from typing import Any

from genlab.data.tokenizers import BPETokenizer, ByteTokenizer, CharTokenizer, HFTokenizer
from genlab.errors import ConfigError


def gpt2_byte_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte value (the alphabet of `tokenizers`' ByteLevel)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    symbols, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            symbols[byte] = chr(byte)
        else:
            symbols[byte] = chr(256 + extra)
            extra += 1
    return symbols


def pipeline_of(tokenizer: Any) -> Any:
    """The `tokenizers.Tokenizer` that encodes text to the ids `tokenizer` gives."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Pipeline

    if isinstance(tokenizer, BPETokenizer):
        return Pipeline.from_str(tokenizer.tokenizer_json)
    if isinstance(tokenizer, CharTokenizer):
        pipeline = Pipeline(models.WordLevel(dict(tokenizer.index), unk_token=tokenizer.chars[0]))
        pipeline.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        pipeline.decoder = decoders.Fuse()
        return pipeline
    if isinstance(tokenizer, ByteTokenizer):
        vocab = {symbol: byte for byte, symbol in gpt2_byte_symbols().items()}
        pipeline = Pipeline(models.BPE(vocab, []))
        pipeline.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        pipeline.decoder = decoders.ByteLevel()
        return pipeline
    raise ConfigError(f"a {tokenizer.kind} tokenizer cannot be exported to the Hugging Face format")


def hf_tokenizer(tokenizer: Any) -> Any:
    """A `transformers` tokenizer equal to `tokenizer`, ready for `save_pretrained`."""
    if isinstance(tokenizer, HFTokenizer):
        return tokenizer.tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=pipeline_of(tokenizer), clean_up_tokenization_spaces=False)
