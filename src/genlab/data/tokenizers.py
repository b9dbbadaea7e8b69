"""Text <-> token ids: characters (vocabulary from the corpus), raw UTF-8 bytes, or byte-level BPE trained locally;
and, for corpora of separate sequences, symbols of a domain (SMILES atoms, ...) with begin/end/padding tokens."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar, Protocol

from genlab.cache import cached
from genlab.errors import ConfigError, DataError

TOKENIZERS = ("char", "byte", "bpe", "hf")


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


class SymbolTokenizer(ABC):
    """One whole sequence (a molecule, a piece of music) <-> ids: the symbols of the corpus plus `<pad>` (0),
    `<bos>` (1) and `<eos>` (2), which mark where a sequence begins and ends.

    A domain says how its text splits into symbols (`split`) and joins back (`join`); the vocabulary is the set of
    symbols seen in the corpus, so a symbol outside it is an error, not a silent <unk>.
    """

    kind: ClassVar[str]
    SPECIALS: ClassVar[tuple[str, ...]] = ("<pad>", "<bos>", "<eos>")
    pad_id: ClassVar[int] = 0
    bos_id: ClassVar[int] = 1
    eos_id: ClassVar[int] = 2

    def __init__(self, symbols: Sequence[str]) -> None:
        self.symbols = [*self.SPECIALS, *symbols]
        self.index = {symbol: i for i, symbol in enumerate(self.symbols)}
        self.vocab_size = len(self.symbols)

    @classmethod
    def fit(cls, pieces: Iterable[Sequence[str]]) -> SymbolTokenizer:
        """The tokenizer whose vocabulary is every symbol of `pieces` (texts already split), sorted."""
        seen: set[str] = set()
        for symbols in pieces:
            seen.update(symbols)
        return cls(sorted(seen))

    @staticmethod
    @abstractmethod
    def split(text: str) -> list[str]:
        """The symbols of one text; joining them gives the text back."""

    @staticmethod
    def join(symbols: Sequence[str]) -> str:
        return "".join(symbols)

    def ids(self, symbols: Sequence[str]) -> list[int]:
        """Ids of symbols (no begin/end tokens)."""
        try:
            return [self.index[symbol] for symbol in symbols]
        except KeyError as exc:
            raise DataError(
                f"the {self.kind} symbol {exc.args[0]!r} is outside the vocabulary of the training data "
                f"({self.vocab_size - len(self.SPECIALS)} symbols)"
            ) from None

    def encode(self, text: str) -> list[int]:
        return self.ids(self.split(text))

    def decode(self, ids: Sequence[int]) -> str:
        """The text of one sequence: up to its first `<eos>`, begin and padding tokens left out."""
        symbols = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= len(self.SPECIALS):
                symbols.append(self.symbols[i])
        return self.join(symbols)

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "symbols": self.symbols[len(self.SPECIALS) :]}


#: The symbol tokenizers by kind, imported when a checkpoint names one (their domains' packages stay unimported).
SYMBOL_TOKENIZERS = {
    "smiles": "genlab.data.smiles:SmilesTokenizer",
    "kekule": "genlab.data.smiles:KekuleTokenizer",
    "selfies": "genlab.data.smiles:SelfiesTokenizer",
    "remi": "genlab.data.music_tokens:RemiTokenizer",
}


def symbol_tokenizer_class(kind: str) -> type[SymbolTokenizer]:
    module, _, name = SYMBOL_TOKENIZERS[kind].partition(":")
    return getattr(import_module(module), name)


def train_tokenizer(kind: str, text: str, vocab_size: int, cache_dir: Path, path: str | None = None) -> Tokenizer:
    """The tokenizer `kind` fitted to `text` (only BPE uses `vocab_size` and the cache; `hf` is read from `path`,
    a model folder, and fitted to nothing)."""
    if kind == "hf":
        if path is None:
            raise ConfigError(
                "data.tokenizer=hf reads a model folder's tokenizer: set model.net.pretrained=FOLDER (or "
                "data.tokenizer_path=FOLDER), or pick data.tokenizer=char, byte or bpe for a net built from a config"
            )
        return HFTokenizer(path)
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
    if kind == "hf":
        return HFTokenizer(state["path"])
    if kind in SYMBOL_TOKENIZERS:
        return symbol_tokenizer_class(kind)(state["symbols"])
    raise DataError(f"unknown tokenizer kind {kind!r} in saved state")


class HFTokenizer:
    """A model folder's own tokenizer (`transformers.AutoTokenizer`), for a pretrained net (`model/net=hf`).

    The saved state is the folder's path: the run needs that folder (its base weights) to be loaded anyway.
    """

    kind = "hf"

    def __init__(self, path: str) -> None:
        from genlab.extras import import_extra

        transformers = import_extra("transformers", "hf", "data.tokenizer=hf")
        self.path = path
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"data.tokenizer_path={path} holds no tokenizer transformers can read ({str(exc).splitlines()[0]}); "
                f"give the model folder (its tokenizer.json / tokenizer_config.json), or pick data.tokenizer=char"
            ) from None
        self.vocab_size = len(self.tokenizer)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def state(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path}
