"""Music as tokens: a REMI-style event encoding of notes on a metrical grid (Huang & Yang 2020, "Pop Music
Transformer"), written and read without any music library.

A piece is a list of notes (onset, duration, MIDI pitch; times in quarter notes, as exact fractions) laid out in
bars. Its tokens, bar by bar:

    Bar  Meter_4/4  Pos_0 Pitch_67 Dur_1 Pitch_62 Dur_1 Pitch_59 Dur_1 Pitch_43 Dur_1  Pos_1 Pitch_67 Dur_2 ...  Bar ...

- `Bar` opens every bar, empty bars included; `Meter_n/d` follows it when the time signature changes (and in the
  first bar), so the decoder knows where the next bar starts;
- `Pos_q` is the onset's place in its bar, in quarter notes, written once per onset;
- `Pitch_p Dur_q` is one note: its MIDI pitch and its duration in quarter notes, capped at the longest duration
  the encoder was given. Notes of one onset go from the highest to the lowest (soprano to bass in a chorale).

Why this encoding: it takes any music (one voice or many, any meter, MIDI without voices), where a four-voice time
grid (DeepBach, Coconet) holds only four-part chorales; and it spends tokens on notes, not on time steps: a chorale
is about 2.6 tokens per note. The bar and position tokens give the model the metre explicitly. Positions and
durations are written as fractions of a quarter note, so tokens read back without knowing the grid they were
quantized to (`data.resolution` only decides which fractions occur).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

from genlab.data.tokenizers import SymbolTokenizer

BAR = "Bar"
METER = "Meter_"
POSITION = "Pos_"
PITCH = "Pitch_"
DURATION = "Dur_"
#: The time signature of a piece that states none.
DEFAULT_METER = "4/4"


@dataclass(frozen=True, order=True)
class Note:
    """One note: onset and duration in quarter notes from the start of the piece, and its MIDI pitch."""

    onset: Fraction
    duration: Fraction
    pitch: int


@dataclass(frozen=True)
class Bar:
    start: Fraction
    meter: str

    @property
    def length(self) -> Fraction:
        return bar_length(self.meter)


@dataclass
class Piece:
    """Notes (in `score_order`) and the bars they sit in; `errors` counts tokens the decoder had to skip (0 for a
    well-formed piece)."""

    notes: list[Note]
    bars: list[Bar] = field(default_factory=list)
    errors: int = 0


def score_order(note: Note) -> tuple[Fraction, int]:
    """Notes in time order, the highest first at each onset: the order of their tokens."""
    return note.onset, -note.pitch


def bar_length(meter: str) -> Fraction:
    """Quarter notes in one bar of `n/d` (additive numerators as `3+2/8`)."""
    numerator, _, denominator = meter.partition("/")
    return Fraction(4 * sum(int(part) for part in numerator.split("+")), int(denominator))


def quantize(time: Fraction | float, resolution: int) -> Fraction:
    """`time` (quarter notes) rounded to the nearest 1/resolution of a quarter note."""
    return Fraction(round(Fraction(time) * resolution), resolution)


def lay_bars(meters: Sequence[tuple[Fraction, str]], end: Fraction) -> list[Bar]:
    """Bars from time 0 until `end`, each in the meter last set at or before its start (the first one before any).

    `meters` are (time, meter) pairs in time order; a change inside a bar applies from the next bar.
    """
    meters = list(meters) or [(Fraction(0), DEFAULT_METER)]
    times = [time for time, _ in meters]
    bars: list[Bar] = []
    start = Fraction(0)
    while start < end or not bars:
        meter = meters[max(0, bisect_right(times, start) - 1)][1]
        bars.append(Bar(start, meter))
        start += bar_length(meter)
    return bars


def encode(piece: Piece) -> list[str]:
    """The tokens of a piece whose bars cover every onset (see the module's docstring)."""
    notes = sorted(piece.notes, key=score_order)
    tokens: list[str] = []
    meter = None
    starts = [bar.start for bar in piece.bars]
    index = 0
    for number, bar in enumerate(piece.bars):
        tokens.append(BAR)
        if bar.meter != meter:
            tokens.append(METER + bar.meter)
            meter = bar.meter
        position = None
        while index < len(notes) and bisect_right(starts, notes[index].onset) - 1 == number:
            note = notes[index]
            if note.onset != position:
                tokens.append(POSITION + str(note.onset - bar.start))
                position = note.onset
            tokens += [f"{PITCH}{note.pitch}", DURATION + str(note.duration)]
            index += 1
    if index < len(notes):
        raise ValueError(f"the bars end at {piece.bars[-1].start} but a note starts at {notes[index].onset}")
    return tokens


def decode(tokens: Iterable[str]) -> Piece:
    """The piece of a token sequence. Generated sequences may break the grammar (a pitch without a duration, a
    position that goes back in its bar): such tokens are skipped and counted in `errors`, the rest is kept."""
    notes: list[Note] = []
    bars: list[Bar] = []
    meter = DEFAULT_METER
    position: Fraction | None = None
    pitch: int | None = None
    errors = 0
    for token in tokens:
        value = token.partition("_")[2]
        if token == BAR:
            start = bars[-1].start + bars[-1].length if bars else Fraction(0)
            bars.append(Bar(start, meter))
            position = None
            errors += pitch is not None
            pitch = None
        elif token.startswith(METER) and bars and position is None and pitch is None:
            meter = value
            bars[-1] = Bar(bars[-1].start, meter)
        elif token.startswith(POSITION) and bars and pitch is None:
            place = Fraction(value)
            if (position is not None and place <= position) or place >= bars[-1].length:
                errors += 1
            else:
                position = place
        elif token.startswith(PITCH) and position is not None and pitch is None:
            pitch = int(value)
        elif token.startswith(DURATION) and pitch is not None and position is not None:
            notes.append(Note(bars[-1].start + position, Fraction(value), pitch))
            pitch = None
        else:
            errors += 1
    return Piece(notes, bars, errors + (pitch is not None))


def transpose(tokens: Sequence[str], semitones: int) -> list[str] | None:
    """The tokens moved by `semitones`; None when a pitch would leave MIDI's 0-127."""
    moved = []
    for token in tokens:
        if token.startswith(PITCH):
            pitch = int(token[len(PITCH) :]) + semitones
            if not 0 <= pitch <= 127:
                return None
            token = f"{PITCH}{pitch}"
        moved.append(token)
    return moved


def excerpts(tokens: Sequence[str], max_length: int) -> list[list[str]]:
    """The piece cut at bar lines into runs of whole bars of at most `max_length` tokens, each opened by its
    meter, so each excerpt is a piece of its own. A single bar longer than `max_length` is left out."""
    bars: list[list[str]] = []
    for token in tokens:
        if token == BAR or not bars:
            bars.append([])
        bars[-1].append(token)
    pieces: list[list[str]] = []
    current: list[str] = []
    meter = METER + DEFAULT_METER
    for bar in bars:
        meter = next((t for t in bar if t.startswith(METER)), meter)
        if current and len(current) + len(bar) > max_length:
            pieces.append(current)
            current = []
        if not current and not any(t.startswith(METER) for t in bar):
            bar = [bar[0], meter, *bar[1:]]
        if len(bar) > max_length:
            continue
        current += bar
    if current:
        pieces.append(current)
    return pieces


class RemiTokenizer(SymbolTokenizer):
    """The tokens of `genlab.data.music_tokens`: a text is the tokens separated by spaces."""

    kind = "remi"

    @staticmethod
    def split(text: str) -> list[str]:
        return text.split()

    @staticmethod
    def join(symbols: Sequence[str]) -> str:
        return " ".join(symbols)
