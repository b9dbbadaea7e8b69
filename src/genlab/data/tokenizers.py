"""Text <-> token ids: characters (vocabulary from the corpus), raw UTF-8 bytes, or byte-level BPE trained locally."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from genlab.cache import cached
from genlab.errors import ConfigError, DataError

TOKENIZERS = ("char", "byte", "bpe")


class Tokenizer(Protocol):
    kind: str
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer (saved with checkpoints)."""
        ...


class CharTokenizer:
    """One token per character of the training corpus; unknown characters are an error, not a silent <unk>."""

    kind = "char"

    def __init__(self, chars: str) -> None:
        self.chars = chars
        self.vocab_size = len(chars)
        self.index = {ch: i for i, ch in enumerate(chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls("".join(sorted(set(text))))

    def encode(self, text: str) -> list[int]:
        unknown = sorted(set(text) - self.index.keys())
        if unknown:
            shown = ", ".join(repr(ch) for ch in unknown[:10])
            raise DataError(
                f"the text has characters outside the char vocabulary ({shown}); the model knows only the "
                f"{self.vocab_size} characters of its training corpus"
            )
        return [self.index[ch] for ch in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "chars": self.chars}


class ByteTokenizer:
    """The 256 byte values of UTF-8: any text, no training, about one token per (ASCII) character."""

    kind = "byte"
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind}


class BPETokenizer:
    """Byte-level BPE (as GPT-2) trained on the training text with Hugging Face `tokenizers`."""

    kind = "bpe"

    def __init__(self, tokenizer_json: str) -> None:
        from tokenizers import Tokenizer as HFTokenizer

        self.tokenizer_json = tokenizer_json
        self.tokenizer = HFTokenizer.from_str(tokenizer_json)
        self.vocab_size = self.tokenizer.get_vocab_size()

    @classmethod
    def train(cls, text: str, vocab_size: int, cache_dir: Path) -> BPETokenizer:
        """Train once per (text, vocab size); later runs read the cached tokenizer from `cache_dir`."""
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        if vocab_size <= 256:
            raise ConfigError(f"data.vocab_size={vocab_size} must exceed the 256 byte symbols of byte-level BPE")
        key = hashlib.sha256(f"{vocab_size}:".encode() + text.encode("utf-8")).hexdigest()[:20]

        def build() -> BPETokenizer:
            tokenizer = HFTokenizer(models.BPE())
            tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tokenizer.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
            )
            tokenizer.train_from_iterator([text], trainer=trainer)
            return cls(tokenizer.to_str())

        def load(path: Path) -> BPETokenizer:
            return cls(path.read_text(encoding="utf-8"))

        def save(tokenizer: BPETokenizer, path: Path) -> None:
            path.write_text(tokenizer.tokenizer_json, encoding="utf-8")

        return cached(cache_dir / "bpe" / f"{key}.json", build, load, save, "BPE tokenizer").value

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "tokenizer_json": self.tokenizer_json}


def train_tokenizer(kind: str, text: str, vocab_size: int, cache_dir: Path) -> Tokenizer:
    """The tokenizer `kind` fitted to `text` (only BPE uses `vocab_size` and the cache)."""
    if kind == "char":
        return CharTokenizer.from_text(text)
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer.train(text, vocab_size, cache_dir)
    raise ConfigError(f"data.tokenizer={kind!r} is not one of {list(TOKENIZERS)}")


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer saved with `state()`."""
    kind = state.get("kind")
    if kind == "char":
        return CharTokenizer(state["chars"])
    if kind == "byte":
        return ByteTokenizer()
    if kind == "bpe":
        return BPETokenizer(state["tokenizer_json"])
    raise DataError(f"unknown tokenizer kind {kind!r} in saved state")
