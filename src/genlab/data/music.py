"""Music as whole token sequences: Bach's chorales from music21's corpus (`data=bach_chorales`, offline) or any folder
of MIDI, MusicXML or ABC files (`data=music_folder`), in the REMI encoding of `genlab.data.music_tokens`.

One item is one piece, so the splits (drawn with `split_seed`) never share a piece; pieces that are the same up to
transposition are kept once (the Riemenschneider collection repeats 22 chorales), so no piece reaches two splits
through a copy either. A piece longer than `max_length` tokens is cut at bar lines into excerpts that stay in its
split; `transpose` adds each training piece moved by every interval up to that many semitones, up and down.
Reading scores is slow (about half a second per chorale), so each source's tokens are cached in `cache_dir`, keyed
by the encoding's settings and the files (names, sizes, modification times). Needs the `[music]` extra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import abstractmethod
from collections.abc import Callable, Iterable, Sequence
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Annotated, Any

from annotated_types import Ge, Le
from pytorch_lightning.utilities import rank_zero_info, rank_zero_warn
from torchvision.utils import save_image

from genlab.cache import cached
from genlab.data.music_tokens import PITCH, Piece, RemiTokenizer, decode, encode, excerpts, quantize, transpose
from genlab.data.piano_roll import RollScale, piano_roll
from genlab.data.scores import SCORE_SUFFIXES, bach_chorales, music21, piece_of_score, read_file, write_scores
from genlab.data.sequences import SequenceDataModule
from genlab.data.spec import DataSpec
from genlab.data.tokenizers import SymbolTokenizer
from genlab.errors import DataError
from genlab.files import write_text_atomically
from genlab.settings import PositiveFloat, PositiveInt

#: Bump when the tokens of a score change, so cached corpora are read again.
ENCODING_VERSION = 1

#: A source of scores: called, it parses one file (or corpus entry) into its scores, or raises a DataError.
ScoreSource = Callable[[], list[Any]]


def cached_texts(path: Path, build: Callable[[], list[str]]) -> list[str]:
    """The JSON list of texts at `path`, else `build()` stored there (`genlab.cache`: built once, whole or not at
    all; a cache folder that cannot be written only costs the next run the same work)."""
    return cached(
        path,
        build,
        load=lambda file: json.loads(file.read_text(encoding="utf-8")),
        save=lambda texts, file: file.write_text(json.dumps(texts), encoding="utf-8"),
        what="tokenized music",
    ).value


def shape_of(tokens: Sequence[str]) -> tuple[str, ...] | None:
    """The tokens moved down so the lowest pitch is 0: equal for a piece and its transpositions (None: no notes)."""
    pitches = [int(token[len(PITCH) :]) for token in tokens if token.startswith(PITCH)]
    return tuple(transpose(tokens, -min(pitches))) if pitches else None


def write_pieces(pieces: Sequence[Piece], texts: Sequence[str], out: Path) -> list[Path]:
    """`tokens.txt` (one piece a line) and, per piece, `sample_NNN.mid`, `.musicxml` and `.png` (its piano roll,
    on the scale of the whole set)."""
    out.mkdir(parents=True, exist_ok=True)
    listing = out / "tokens.txt"
    write_text_atomically(listing, "".join(f"{text}\n" for text in texts))
    written = [listing]
    scale = RollScale.of(pieces)
    for i, piece in enumerate(pieces):
        stem = out / f"sample_{i:03d}"
        written += write_scores(piece, stem)
        save_image(piano_roll(piece, scale), stem.with_suffix(".png"))
        written.append(stem.with_suffix(".png"))
    return written


class MusicDataModule(SequenceDataModule):
    """Pieces of music as REMI token sequences; a source subclasses it with `sources` and `source_key`.

    `resolution`: grid steps per quarter note (4: sixteenth notes; 12 also keeps triplets); `max_duration`: longer
    notes are cut to this many quarter notes; `max_length`: pieces of more tokens are cut into excerpts of whole
    bars; `transpose`: training pieces are added moved by 1..transpose semitones up and down (0: off).
    """

    name = "music"

    def __init__(
        self,
        resolution: PositiveInt = 4,
        max_duration: PositiveFloat = 8.0,
        transpose: Annotated[int, Ge(0), Le(11)] = 0,
        **kwargs: Any,
    ) -> None:
        music21(f"data={self.name}")
        super().__init__(**kwargs)
        self.resolution = resolution
        self.max_duration = max(quantize(max_duration, resolution), Fraction(1, resolution))
        self.transpose = transpose

    @property
    def tokenizer_class(self) -> type[SymbolTokenizer]:
        return RemiTokenizer

    @abstractmethod
    def sources(self) -> Iterable[ScoreSource]:
        """The scores to read, one source per file (or corpus entry)."""

    @abstractmethod
    def source_key(self) -> str:
        """What the sources hold, for the cache: a folder's files with their sizes and modification times."""

    def read_corpus(self) -> dict[str, list[str]]:
        settings = [ENCODING_VERSION, self.resolution, str(self.max_duration), self.source_key()]
        key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:20]
        return {"train": cached_texts(self.cache_dir / "music" / f"{self.name}-{key}.json", self.read_pieces)}

    def read_pieces(self) -> list[str]:
        """Every source's pieces as token texts, each shape once; unreadable files are left out with a warning."""
        texts: list[str] = []
        seen: set[tuple[str, ...]] = set()
        failures: list[str] = []
        for source in self.sources():
            try:
                scores = source()
            except DataError as exc:
                failures.append(str(exc))
                continue
            for score in scores:
                tokens = encode(piece_of_score(score, self.resolution, self.max_duration))
                shape = shape_of(tokens)
                if shape is not None and shape not in seen:
                    seen.add(shape)
                    texts.append(" ".join(tokens))
        if not texts:
            reason = f"; {failures[0]}" if failures else ""
            raise DataError(f"{self.name}: no piece with notes could be read{reason}")
        if failures:
            rank_zero_warn(f"{self.name}: left out {len(failures)} files that could not be read, e.g. {failures[0]}")
        rank_zero_info(f"{self.name}: {len(texts)} pieces (the same up to transposition counted once)")
        return texts

    def texts_of(self, item: str, split: str) -> list[str]:
        """The piece (in training, with its transpositions), cut into excerpts of at most `max_length` tokens."""
        tokens = item.split()
        versions = [tokens]
        if split == "train" and self.transpose:
            moved = (transpose(tokens, shift) for shift in range(-self.transpose, self.transpose + 1))
            versions = [version for version in moved if version is not None]
        if self.max_length:
            versions = [excerpt for version in versions for excerpt in excerpts(version, self.max_length)]
        return [" ".join(version) for version in versions]

    def tokens_per_unit(self) -> dict[str, dict[str, float]]:
        """Per evaluation split, the tokens the loss counts (the end tokens included) per note, and per quarter note
        of music (the bars its sequences span), for `loss_per_note` and `loss_per_quarter`."""
        per_note, per_quarter = {}, {}
        for split in ("val", "test"):
            dataset = self.datasets[split]
            tokens = float((dataset.lengths - 1).sum())
            pieces = [decode(self.tokenizer.decode(row.tolist()).split()) for row in dataset.tokens]
            per_note[split] = tokens / max(1, sum(len(piece.notes) for piece in pieces))
            per_quarter[split] = tokens / float(max(1, sum(bar.length for piece in pieces for bar in piece.bars)))
        return {"note": per_note, "quarter": per_quarter}

    @property
    def spec(self) -> DataSpec:
        """The sequences' spec, with tokens per note and per quarter note instead of per character of token text."""
        return dataclasses.replace(super().spec, tokens_per_char=None, tokens_per_unit=self.tokens_per_unit())

    @classmethod
    def write_samples(cls, texts: Sequence[str], tokenizer: SymbolTokenizer, out: Path) -> list[Path]:
        """genlab-sample's files: each generated piece as MIDI, MusicXML and a piano roll, and their tokens."""
        return write_pieces([decode(tokenizer.split(text)) for text in texts], texts, out)


class BachChorales(MusicDataModule):
    """The 371 chorales harmonised by J. S. Bach in music21's corpus (349 once repeats are removed), all four voices."""

    name = "bach_chorales"

    def sources(self) -> Iterable[ScoreSource]:
        return ((lambda score=score: [score]) for score in bach_chorales())  # the corpus parses as it goes

    def source_key(self) -> str:
        return f"music21 {music21().__version__} corpus.chorales"


class MusicFolder(MusicDataModule):
    """Every MIDI, MusicXML, ABC or Humdrum file under `path` (recursively); an ABC file of many tunes gives a
    piece per tune."""

    name = "music_folder"

    def __init__(self, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = Path(path).expanduser()

    def files(self) -> list[Path]:
        if not self.path.is_dir():
            raise DataError(f"{self.path} is not a folder; point data.path at a folder of MIDI, MusicXML or ABC files")
        files = sorted(p for p in self.path.rglob("*") if p.is_file() and p.suffix.lower() in SCORE_SUFFIXES)
        if not files:
            raise DataError(f"{self.path} holds no score files (looked for {', '.join(SCORE_SUFFIXES)})")
        return files

    def sources(self) -> Iterable[ScoreSource]:
        return [partial(read_file, path) for path in self.files()]

    def source_key(self) -> str:
        listing = [(str(p.relative_to(self.path)), p.stat().st_size, p.stat().st_mtime_ns) for p in self.files()]
        return json.dumps([str(self.path.resolve()), listing])
