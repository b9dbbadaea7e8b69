"""`data=hf_dataset`: a text column of a Hugging Face `datasets` dataset (a folder written by `save_to_disk`, or local
Parquet / JSON Lines / CSV files) as windows of tokens, like the other text data.

The dataset is memory-mapped Arrow (`datasets` converts files into its cache once) and read in batches of rows, so
its text is never held whole; each split's tokens are written once into a flat file in `cache_dir` (keyed by the
dataset's files, the column and the tokenizer) and memory-mapped from there by every later run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from genlab.data.text import TextDataModule
from genlab.data.tokenizers import CharTokenizer, Tokenizer, train_tokenizer
from genlab.errors import DataError
from genlab.extras import import_extra
from genlab.files import atomic_write, write_json_atomically
from genlab.settings import PositiveInt

#: File formats `datasets` reads, by extension.
FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}
#: Split names a dataset may use for held-out text, in genlab's terms.
SPLIT_NAMES = {"train": ("train",), "val": ("validation", "valid", "val", "dev"), "test": ("test",)}
#: How many characters of training text a BPE vocabulary is fitted to.
BPE_FIT_CHARS = 10_000_000


def files_of(path: Path) -> list[Path]:
    """The data files of `path`: itself, or every file of a known format under the folder."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.suffix in FORMATS)
    if not files:
        raise DataError(
            f"data.path={path} holds no dataset: give a folder written by Dataset.save_to_disk, or Parquet, "
            f"JSON Lines or CSV files ({', '.join(FORMATS)})"
        )
    return files


def split_of(file: Path) -> str:
    """The split a data file belongs to, by its name (train-00000.parquet, validation.jsonl); train otherwise."""
    stem = file.stem.lower()
    for split, names in SPLIT_NAMES.items():
        if any(stem == name or stem.startswith((f"{name}-", f"{name}_", f"{name}.")) for name in names):
            return split
    return "train"


def read_dataset(path: Path, cache_dir: Path) -> dict[str, Any]:
    """The dataset's splits (genlab's names: train, val, test), memory-mapped."""
    datasets = import_extra("datasets", "hf", "data=hf_dataset")
    datasets.disable_progress_bars()
    if not path.exists():
        raise DataError(f"data.path={path} does not exist; give a dataset folder or data files")
    if path.is_dir() and any((path / marker).is_file() for marker in ("dataset_dict.json", "state.json")):
        loaded = datasets.load_from_disk(str(path))
        found = dict(loaded) if isinstance(loaded, datasets.DatasetDict) else {"train": loaded}
    else:
        files = files_of(path)
        formats = {FORMATS[file.suffix] for file in files}
        if len(formats) > 1:
            raise DataError(f"data.path={path} mixes file formats ({', '.join(sorted(formats))}); keep one")
        data_files: dict[str, list[str]] = {}
        for file in files:
            data_files.setdefault(split_of(file), []).append(str(file))
        found = dict(datasets.load_dataset(formats.pop(), data_files=data_files, cache_dir=str(cache_dir)))
    splits = {}
    for split, names in SPLIT_NAMES.items():
        name = next((name for name in names if name in found), None)
        if name is not None:
            splits[split] = found[name]
    if "train" not in splits:
        raise DataError(f"data.path={path} has no train split (it has {', '.join(found)}); name one train")
    return splits


def batches(dataset: Any, column: str, size: int = 1000) -> Iterator[list[str]]:
    """The column's texts, `size` rows at a time (only those rows are read from the memory-mapped table)."""
    for start in range(0, len(dataset), size):
        yield dataset[start : start + size][column]


class HFDatasetDataModule(TextDataModule):
    """Documents of a `text_column`, joined by `separator` (the end-of-text token of a model's tokenizer, where it
    has one), split by the dataset's own splits (train, validation/valid/val/dev, test) or, where it has no
    validation split, by documents with `split_seed` (`val_fraction`, `test_fraction`)."""

    name = "hf_dataset"

    def __init__(
        self,
        path: str,
        text_column: str = "text",
        separator: str = "\n\n",
        tokenize_batch: PositiveInt = 1000,
        tokenizer: Literal["char", "byte", "bpe", "hf"] = "char",
        **kwargs: Any,
    ) -> None:
        super().__init__(tokenizer=tokenizer, **kwargs)
        self.path = Path(path).expanduser().resolve()
        self.text_column = text_column
        self.separator = separator
        self.tokenize_batch = tokenize_batch

    def read_text(self) -> str:
        raise NotImplementedError("hf_dataset streams its splits (see _load); it never reads its text whole")

    def splits(self) -> dict[str, Any]:
        splits = read_dataset(self.path, self.cache_dir / "hf_datasets")
        for split in splits.values():
            if self.text_column not in split.column_names:
                raise DataError(
                    f"data.text_column={self.text_column} is not a column of {self.path} "
                    f"(its columns: {', '.join(split.column_names)}); set data.text_column"
                )
        if "val" not in splits:
            splits.update(self.held_out(splits["train"], with_test="test" not in splits))
        return splits

    def held_out(self, train: Any, with_test: bool) -> dict[str, Any]:
        """Train, validation (and test) documents drawn from the train split with `split_seed`; the index mappings
        stay in memory, so nothing is written next to the (maybe read-only) dataset."""
        order = np.random.default_rng(self.split_seed).permutation(len(train))
        n_val = max(1, round(len(train) * self.val_fraction))
        n_test = round(len(train) * self.test_fraction) if with_test else 0
        parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
        return {split: train.select(np.sort(rows), keep_in_memory=True) for split, rows in parts.items() if len(rows)}

    def fit_tokenizer(self, train: Any) -> Tokenizer:
        if self.tokenizer_kind == "char":  # every character of the training documents (a pass over the column)
            seen: set[str] = set(self.separator)
            for texts in batches(train, self.text_column, self.tokenize_batch):
                seen.update(*texts)
            return CharTokenizer("".join(sorted(seen)))
        sample = ""
        if self.tokenizer_kind == "bpe":
            for texts in batches(train, self.text_column, self.tokenize_batch):
                sample += self.separator.join(texts) + self.separator
                if len(sample) >= BPE_FIT_CHARS:
                    break
        return train_tokenizer(self.tokenizer_kind, sample, self.vocab_size, self.cache_dir, self.tokenizer_path)

    def separator_ids(self, tokenizer: Tokenizer) -> list[int]:
        eos = getattr(getattr(tokenizer, "tokenizer", None), "eos_token_id", None)
        return [eos] if eos is not None else tokenizer.encode(self.separator)

    def token_file(self, split: str, dataset: Any, tokenizer: Tokenizer) -> tuple[torch.Tensor, int]:
        """The split's tokens, memory-mapped from the cache (written on first use), and its number of characters."""
        source = [(str(p.relative_to(self.path)), p.stat().st_size, p.stat().st_mtime_ns) for p in self.source_files()]
        where = [split, self.split_seed, self.val_fraction, self.test_fraction, self.text_column, self.separator]
        identity = [source, where, tokenizer.state(), tokenizer.vocab_size]
        key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
        tokens_path = self.cache_dir / "hf_dataset_tokens" / f"{key}.int32"
        info_path = tokens_path.with_suffix(".json")
        if not info_path.is_file():
            separator, count, chars = self.separator_ids(tokenizer), 0, 0
            with atomic_write(tokens_path) as partial, partial.open("wb") as out:
                for texts in batches(dataset, self.text_column, self.tokenize_batch):
                    for text in texts:
                        ids = np.asarray(tokenizer.encode(text or "") + separator, dtype=np.int32)
                        out.write(ids.tobytes())
                        count += len(ids)
                        chars += len(text or "") + len(self.separator)
            write_json_atomically(info_path, {"tokens": count, "chars": chars, "split": split})
        info = json.loads(info_path.read_text())
        if info["tokens"] == 0:
            return torch.zeros(0, dtype=torch.int32), 0
        mapped = np.memmap(tokens_path, dtype=np.int32, mode="c", shape=(info["tokens"],))
        return torch.from_numpy(mapped), info["chars"]

    def source_files(self) -> list[Path]:
        return [self.path] if self.path.is_file() else sorted(p for p in self.path.rglob("*") if p.is_file())

    def _load(self) -> None:
        if self.tokenizer is not None:
            return
        splits = self.splits()
        self.tokenizer = self.fit_tokenizer(splits["train"])
        chars = {}
        for split, dataset in splits.items():
            self.tokens[split], chars[split] = self.token_file(split, dataset, self.tokenizer)
        for split in self.tokens:
            if len(self.tokens[split]) <= self.block_size + 1:
                raise DataError(
                    f"data.block_size={self.block_size} is larger than the {split} split of {self.path} "
                    f"({len(self.tokens[split])} tokens); lower data.block_size or use more text"
                )
        self.tokens_per_char = len(self.tokens["val"]) / max(chars["val"], 1)
