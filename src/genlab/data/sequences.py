"""Corpora of separate sequences (one molecule, one piece of music): whole sequences with begin/end tokens, batched
and padded, never windows cut across two of them.

A domain subclasses `SequenceDataModule`: it reads its items (`read_corpus`), may turn each into the text the model
learns (`text_of`, e.g. SMILES -> SELFIES), and names the tokenizer that splits that text into symbols. The splits
are drawn with `split_seed` (not the training seed), so every run of a sweep is scored on the same sequences.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import pytorch_lightning as pl
import torch
from annotated_types import Gt, Lt
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader, Dataset

from genlab.data.blocks import TrainsInBlocks
from genlab.data.spec import DataSpec
from genlab.data.tensor_dataset import already_batched
from genlab.data.tokenizers import SymbolTokenizer
from genlab.errors import DataError
from genlab.files import write_text_atomically
from genlab.settings import NonNegativeInt, PositiveInt

#: How many items a split takes: a count, or a fraction of the items when below 1.
SplitSize = PositiveInt | Annotated[float, Gt(0), Lt(1)]

IGNORE = -1  # the target the loss ignores (genlab.nets.transformer.GPT)


class WholeSequences(Dataset):
    """Item i is sequence i as (inputs, targets): `<bos> symbols <eos>` shifted by one.

    The sequences are held as one padded tensor; a batch is cut to its longest sequence, and its targets are
    `IGNORE` at the padding, so the loss counts only real tokens (the end token included).
    """

    def __init__(self, sequences: Sequence[Sequence[int]], tokenizer: SymbolTokenizer) -> None:
        lengths = torch.tensor([len(ids) + 2 for ids in sequences])
        dtype = torch.int16 if tokenizer.vocab_size <= torch.iinfo(torch.int16).max else torch.int32
        self.tokens = torch.full((len(sequences), int(lengths.max())), tokenizer.pad_id, dtype=dtype)
        flat = torch.tensor([i for ids in sequences for i in (tokenizer.bos_id, *ids, tokenizer.eos_id)], dtype=dtype)
        rows = torch.repeat_interleave(torch.arange(len(sequences)), lengths)
        starts = torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
        self.tokens[rows, torch.arange(len(flat)) - starts] = flat
        self.lengths = lengths
        self.pad_id = tokenizer.pad_id

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices)
        rows = self.tokens[index, : int(self.lengths[index].max())].long()
        inputs, targets = rows[:, :-1], rows[:, 1:].clone()
        targets[targets == self.pad_id] = IGNORE
        return inputs, targets

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.__getitems__([index])
        return inputs[0], targets[0]


def split_count(size: float, total: int) -> int:
    """`size` as a number of items: a count, or a fraction of `total` when below 1."""
    return round(size * total) if isinstance(size, float) and size < 1 else int(size)


def split_corpus(
    corpus: dict[str, list[str]], val_size: float, test_size: float, max_train: int | None, seed: int
) -> dict[str, list[str]]:
    """train/val/test from the corpus: validation (and test, when the corpus has none of its own) drawn from its
    train items with `seed`, then at most `max_train` of the rest, also drawn at random."""
    items = corpus.get("train", [])
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed)).tolist()
    test_count = 0 if "test" in corpus else split_count(test_size, len(items))
    val_count = split_count(val_size, len(items))
    if val_count + test_count >= len(items):
        raise DataError(
            f"the corpus has {len(items)} training sequences, too few to split off {val_count} for validation"
            + (f" and {test_count} for test" if test_count else "")
            + "; lower data.val_size (or data.test_size) or use more data"
        )
    picked = [items[i] for i in order]
    train = picked[val_count + test_count :]
    return {
        "train": train[:max_train] if max_train else train,
        "val": picked[test_count : test_count + val_count],
        "test": corpus["test"] if "test" in corpus else picked[:test_count],
    }


class SequenceDataModule(TrainsInBlocks, pl.LightningDataModule, ABC):
    """Whole sequences held in memory as token tensors; `batch_size` sequences per step (per device under DDP), an
    epoch is one pass over the (shuffled) training sequences, validation and test cover their splits once.

    `max_train` trains on a random subset; `max_length` leaves out sequences of more symbols (they would set the
    context length of the model). The vocabulary is every symbol of the three splits.
    """

    name = "sequences"

    def __init__(
        self,
        cache_dir: str,
        batch_size: PositiveInt = 128,
        eval_batch_size: PositiveInt | None = None,
        val_size: SplitSize = 10_000,
        test_size: SplitSize = 0.1,
        max_train: PositiveInt | None = None,
        max_length: PositiveInt | None = None,
        split_seed: int = 0,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        self.cache_dir = Path(cache_dir).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.val_size = val_size
        self.test_size = test_size
        self.max_train = max_train
        self.max_length = max_length
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.tokenizer: SymbolTokenizer | None = None
        self.items: dict[str, list[str]] = {}
        #: The source's whole training split as read, before validation (and test) are drawn from it and
        #: `max_train` subsets it: what MOSES' novelty compares samples with.
        self.training_split: list[str] = []
        self.datasets: dict[str, WholeSequences] = {}
        self.tokens_per_char = 1.0

    @abstractmethod
    def read_corpus(self) -> dict[str, list[str]]:
        """The items, one per sequence: {"train": [...]}, plus "test" when the source fixes its own test split."""

    @property
    @abstractmethod
    def tokenizer_class(self) -> type[SymbolTokenizer]:
        """How the texts split into symbols."""

    def text_of(self, item: str) -> str | None:
        """The text the model learns for one item (None leaves the item out); the item itself by default."""
        return item

    def texts_of(self, item: str, split: str) -> list[str]:
        """The texts the model learns for one item of `split`: its `text_of` by default. A domain may give several
        (a long piece cut into excerpts, transposed copies for training): they stay in the item's split."""
        text = self.text_of(item)
        return [] if text is None else [text]

    def _load(self) -> None:
        """Read, split and tokenize once (the vocabulary and the longest sequence are needed to build the model)."""
        if self.tokenizer is not None:
            return
        corpus = self.read_corpus()
        self.training_split = corpus.get("train", [])
        splits = split_corpus(corpus, self.val_size, self.test_size, self.max_train, self.split_seed)
        pieces: dict[str, list[list[str]]] = {}
        for split, items in splits.items():
            kept, pieces[split] = [], []
            for item in items:
                sequences = [self.tokenizer_class.split(text) for text in self.texts_of(item, split)]
                sequences = [s for s in sequences if self.max_length is None or len(s) <= self.max_length]
                if sequences:
                    kept.append(item)
                    pieces[split] += sequences
            if len(kept) < len(items):
                rank_zero_info(
                    f"{self.name}: left out {len(items) - len(kept)} of the {len(items)} {split} sequences "
                    f"(unreadable, or longer than data.max_length={self.max_length})"
                )
            if not kept:
                raise DataError(f"{self.name}: the {split} split has no usable sequences; check the data")
            self.items[split] = kept
        self.tokenizer = self.tokenizer_class.fit(symbols for split in pieces.values() for symbols in split)
        self.datasets = {
            split: WholeSequences([self.tokenizer.ids(symbols) for symbols in split_pieces], self.tokenizer)
            for split, split_pieces in pieces.items()
        }
        val_chars = sum(len(self.tokenizer.join(symbols)) for symbols in pieces["val"])
        self.tokens_per_char = sum(len(symbols) + 1 for symbols in pieces["val"]) / max(1, val_chars)

    @property
    def block_size(self) -> int:
        """The model's context: the longest sequence's symbols plus its begin (or end) token."""
        self._load()
        return max(dataset.tokens.shape[1] for dataset in self.datasets.values()) - 1

    @property
    def spec(self) -> DataSpec:
        self._load()
        return DataSpec.of_text(self.name, self.tokenizer, self.block_size, self.tokens_per_char)

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=already_batched,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.training_block_size(self.batch_size), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    @classmethod
    def write_samples(cls, texts: Sequence[str], tokenizer: SymbolTokenizer, out: Path) -> list[Path]:
        """genlab-sample's files for generated sequences: `sequences.txt`, one a line (domains write their own)."""
        path = out / "sequences.txt"
        write_text_atomically(path, "".join(f"{text}\n" for text in texts))
        return [path]
