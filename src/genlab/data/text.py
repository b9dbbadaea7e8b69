"""Text datamodules: a corpus tokenized once into one tensor, served as windows of block_size + 1 tokens.

Training draws random windows, a fixed number per "epoch" (as nanoGPT samples batches by step); validation uses a
fixed, seeded set of windows so `val/loss` is comparable across runs; test covers the test text with
non-overlapping windows, every token predicted once.
"""

from __future__ import annotations

import sysconfig
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Literal

import pytorch_lightning as pl
import torch
from annotated_types import Gt, Lt
from torch.utils.data import DataLoader, Dataset, Sampler

from genlab.data.blocks import TrainsInBlocks
from genlab.data.spec import DataSpec
from genlab.data.tensor_dataset import already_batched
from genlab.data.tokenizers import Tokenizer, train_tokenizer
from genlab.errors import DataError, check
from genlab.files import write_bytes_atomically
from genlab.settings import NonNegativeInt, PositiveInt, UnitFraction

SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


class TokenWindows(Dataset):
    """Item i is the window starting at `offsets[i]` (every valid offset when None): (input, target) pairs."""

    def __init__(self, tokens: torch.Tensor, block_size: int, offsets: torch.Tensor | None = None) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.offsets = offsets
        self.span = torch.arange(block_size + 1)

    def __len__(self) -> int:
        return len(self.offsets) if self.offsets is not None else len(self.tokens) - self.block_size

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.as_tensor(indices)
        if self.offsets is not None:
            starts = self.offsets[starts]
        windows = self.tokens[starts.unsqueeze(1) + self.span].long()  # memory-mapped tokens are int32
        return windows[:, :-1], windows[:, 1:]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.__getitems__([index])
        return inputs[0], targets[0]


class RandomWindowStarts(Sampler[int]):
    """`num_samples` window starts drawn uniformly with replacement from torch's global random stream.

    Not a RandomSampler on purpose: under DDP Lightning swaps a RandomSampler for a DistributedSampler over the
    whole dataset (an epoch of every window), but wraps other samplers, splitting these draws across processes.
    """

    def __init__(self, num_windows: int, num_samples: int) -> None:
        self.num_windows = num_windows
        self.num_samples = num_samples

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self):
        yield from torch.randint(0, self.num_windows, (self.num_samples,)).tolist()


class TextDataModule(TrainsInBlocks, pl.LightningDataModule, ABC):
    """The corpus is split by position: train first, then validation, then test (nanoGPT: last 10% validation).

    With `test_fraction=0` the test stage reads the validation text, non-overlapping. `batch_size` is per device.
    """

    name = "text"

    def __init__(
        self,
        cache_dir: str,
        block_size: PositiveInt = 256,
        batch_size: PositiveInt = 64,
        eval_batch_size: PositiveInt | None = None,
        tokenizer: Literal["char", "byte", "bpe", "hf"] = "char",
        vocab_size: PositiveInt = 1024,
        tokenizer_path: str | None = None,
        val_fraction: Annotated[float, Gt(0), Lt(1)] = 0.1,
        test_fraction: UnitFraction = 0.0,
        val_batches: PositiveInt = 20,
        steps_per_epoch: PositiveInt = 250,
        split_seed: int = 0,
        num_workers: NonNegativeInt = 0,
    ) -> None:
        super().__init__()
        check(test_fraction < 1 - val_fraction, f"data.test_fraction={test_fraction} leaves no training text")
        self.cache_dir = Path(cache_dir).expanduser()
        self.block_size = block_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.tokenizer_kind = tokenizer
        self.vocab_size = vocab_size
        self.tokenizer_path = tokenizer_path
        self.val_fraction = val_fraction
        self.test_fraction = test_fraction
        self.val_batches = val_batches
        self.steps_per_epoch = steps_per_epoch
        self.split_seed = split_seed
        self.num_workers = num_workers
        self.tokenizer: Tokenizer | None = None
        self.tokens: dict[str, torch.Tensor] = {}
        self.tokens_per_char: float | None = None

    @abstractmethod
    def read_text(self) -> str:
        """The whole corpus."""

    def _load(self) -> None:
        """Read, split and tokenize the corpus once (the vocabulary is needed before the model is built)."""
        if self.tokenizer is not None:
            return
        self.prepare_data()  # the vocabulary is needed before the Trainer exists, so fetch the corpus now
        text = self.read_text()
        if not text.strip():
            raise DataError(f"data={self.name} has no text to learn from; check the file (data.path) or folder")
        n = len(text)
        val_start = int(n * (1 - self.val_fraction - self.test_fraction))
        test_start = int(n * (1 - self.test_fraction))
        parts = {"train": text[:val_start], "val": text[val_start:test_start], "test": text[test_start:]}
        # The char vocabulary comes from the whole corpus (as nanoGPT); BPE is fitted to the training text only.
        fit_text = text if self.tokenizer_kind == "char" else parts["train"]
        self.tokenizer = train_tokenizer(
            self.tokenizer_kind, fit_text, self.vocab_size, self.cache_dir, self.tokenizer_path
        )
        self.tokens = {
            split: torch.tensor(self.tokenizer.encode(part), dtype=torch.long) for split, part in parts.items() if part
        }
        # Every split read whole windows of block_size + 1 tokens (test only when it has text of its own).
        for split in ("train", "val", "test") if self.test_fraction > 0 else ("train", "val"):
            count = len(self.tokens.get(split, ()))
            if count <= self.block_size + 1:
                raise DataError(
                    f"data.block_size={self.block_size} is larger than the {split} text "
                    f"({count} tokens); lower data.block_size or use more text"
                )
        self.tokens_per_char = len(self.tokens["val"]) / len(parts["val"])

    @property
    def spec(self) -> DataSpec:
        self._load()
        return DataSpec.of_text(self.name, self.tokenizer, self.block_size, self.tokens_per_char)

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def train_dataloader(self) -> DataLoader:
        windows = TokenWindows(self.tokens["train"], self.block_size)
        # Under DDP each process takes its share of these draws: scale them so that every process still makes
        # steps_per_epoch steps of batch_size windows (batch_size is per device).
        world_size = self.trainer.world_size if self.trainer is not None else 1
        sampler = RandomWindowStarts(len(windows), self.steps_per_epoch * self.batch_size * world_size)
        return self._loader(windows, self.training_block_size(self.batch_size), sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        tokens = self.tokens["val"]
        generator = torch.Generator().manual_seed(self.split_seed)
        count = self.val_batches * self.eval_batch_size
        offsets = torch.randint(0, len(tokens) - self.block_size, (count,), generator=generator)
        return self._loader(TokenWindows(tokens, self.block_size, offsets), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        tokens = self.tokens.get("test", self.tokens["val"])
        offsets = torch.arange(0, len(tokens) - self.block_size, self.block_size)
        return self._loader(TokenWindows(tokens, self.block_size, offsets), self.eval_batch_size)

    def _loader(self, windows: TokenWindows, batch_size: int, sampler=None) -> DataLoader:
        return DataLoader(
            windows,
            batch_size=batch_size,
            sampler=sampler,
            shuffle=False,
            collate_fn=already_batched,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )


class ShakespeareDataModule(TextDataModule):
    """Tiny Shakespeare (karpathy/char-rnn, 1.1 MB) from `data_dir/shakespeare/input.txt`, downloaded if missing."""

    name = "shakespeare"

    def __init__(self, data_dir: str, download: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.file = (Path(data_dir).expanduser() / "shakespeare" / "input.txt").resolve()
        self.download = download

    def prepare_data(self) -> None:
        if self.file.exists() or not self.download:
            return
        try:
            with urllib.request.urlopen(SHAKESPEARE_URL, timeout=30) as response:
                content = response.read()
        except (urllib.error.URLError, OSError) as exc:
            raise DataError(
                f"tiny Shakespeare is not at {self.file} and could not be downloaded ({exc}); run once with network "
                f"access, copy char-rnn's tinyshakespeare/input.txt there, or point GENLAB_DATA_DIR at a folder "
                f"holding shakespeare/input.txt"
            ) from None
        write_bytes_atomically(self.file, content)  # DDP processes may race to fetch it

    def read_text(self) -> str:
        if not self.file.exists():
            raise DataError(
                f"tiny Shakespeare is not at {self.file}; copy char-rnn's tinyshakespeare/input.txt there, point "
                f"GENLAB_DATA_DIR at a folder holding shakespeare/input.txt, or allow data.download=true"
            )
        return self.file.read_text(encoding="utf-8")


def read_utf8(path: Path) -> str:
    """A text file's content; a file that is not UTF-8 text (a binary file, another encoding) is one line."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"data.path={path} is not UTF-8 text (byte {exc.start} cannot be decoded); give a text file, "
            f"or convert it with e.g. iconv -t utf-8"
        ) from None


class TextFileDataModule(TextDataModule):
    """Any text file, or every file with one of `extensions` under a folder (sorted, joined by blank lines)."""

    name = "text_file"

    def __init__(self, path: str, extensions: Sequence[str] = (".txt", ".md"), **kwargs) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser()
        self.extensions = tuple(extensions)

    def read_text(self) -> str:
        if self.path.is_file():
            return read_utf8(self.path)
        if not self.path.is_dir():
            raise DataError(f"data.path={self.path} is neither a file nor a folder; set data.path to your text")
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix in self.extensions)
        if not files:
            raise DataError(f"data.path={self.path} holds no files ending in {', '.join(self.extensions)}")
        return "\n\n".join(p.read_text(encoding="utf-8", errors="replace") for p in files)


class PythonSourceDataModule(TextDataModule):
    """The Python standard library's own source: a corpus on every machine, offline, no download.

    The top-level `*.py` files of the running interpreter's stdlib, sorted, up to `max_chars` characters; the text
    (and so the numbers) depend on the Python version.
    """

    name = "python_source"

    def __init__(self, max_chars: PositiveInt = 2_000_000, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_chars = max_chars

    def read_text(self) -> str:
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        chunks, total = [], 0
        for file in sorted(stdlib.glob("*.py")):
            chunk = file.read_text(encoding="utf-8", errors="replace")
            chunks.append(chunk)
            total += len(chunk)
            if total >= self.max_chars:
                break
        return "".join(chunks)[: self.max_chars]
