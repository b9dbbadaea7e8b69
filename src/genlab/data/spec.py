"""What a datamodule hands to a model, so the model can size its nets and refuse data it cannot model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from genlab.errors import DataError


@dataclass(frozen=True)
class DataSpec:
    """The kind, shape and value range of one example.

    `shape` is (channels, height, width) for images and (block_size,) for text. Text data also hands over its
    tokenizer and how many tokens one character of held-out text costs (to turn nats/token into bits/character);
    `tokens_per_unit` does the same for other units, per unit and split (music: `{"note": {"val": 2.4, "test":
    2.5}}`, so a language model also reports nats per note).
    """

    kind: Literal["image", "text"]
    shape: tuple[int, ...]
    value_range: tuple[float, float] = (0.0, 1.0)
    num_classes: int | None = None
    vocab_size: int | None = None
    name: str = ""
    tokens_per_char: float | None = None
    tokens_per_unit: dict[str, dict[str, float]] = field(default_factory=dict)
    tokenizer: Any = field(default=None, compare=False, repr=False)

    @classmethod
    def of_text(cls, name: str, tokenizer: Any, block_size: int, tokens_per_char: float | None) -> DataSpec:
        """The spec of tokenized text or sequences: windows of `block_size` token ids from `tokenizer`."""
        return cls(
            kind="text",
            shape=(block_size,),
            value_range=(0.0, float(tokenizer.vocab_size - 1)),
            vocab_size=tokenizer.vocab_size,
            name=name,
            tokens_per_char=tokens_per_char,
            tokenizer=tokenizer,
        )

    @property
    def num_dims(self) -> int:
        """Number of scalar dimensions in one example (the D of bits per dimension)."""
        return math.prod(self.shape)

    def require_kind(self, kind: str, model: str) -> None:
        """Fail with one clear line when a model is asked to learn data of the wrong kind."""
        if self.kind != kind:
            raise DataError(
                f"{model} models {kind} data, but data={self.name or '?'} gives {self.kind} data; "
                f"choose a {kind} dataset or another model"
            )
