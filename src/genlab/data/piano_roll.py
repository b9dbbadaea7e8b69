"""Piano rolls: pieces drawn as images (time to the right, pitch upwards), for the loggers and as PNG files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import torch

from genlab.data.music_tokens import Piece

#: Pixels per quarter note and per semitone.
QUARTER_PX = 8
SEMITONE_PX = 3
NOTE_COLOUR = (0.13, 0.31, 0.62)
BAR_LINE_GREY = 0.75
#: The rows of the Cs are shaded, to read the octaves.
C_ROW_GREY = 0.92


@dataclass(frozen=True)
class RollScale:
    """What a set of piano rolls shares, so they compare at a glance: the pitches drawn and the time span."""

    low: int
    high: int
    end: Fraction

    @classmethod
    def of(cls, pieces: Sequence[Piece]) -> RollScale:
        """The pitches all the pieces span (two semitones of margin) and the length of the longest (a bar at least)."""
        notes = [note for piece in pieces for note in piece.notes]
        return cls(
            low=min((n.pitch for n in notes), default=60) - 2,
            high=max((n.pitch for n in notes), default=72) + 2,
            end=max([n.onset + n.duration for n in notes] + [Fraction(4)]),
        )


def piano_roll(piece: Piece, scale: RollScale) -> torch.Tensor:
    """A (3, H, W) image in [0, 1]: each note a bar of its pitch's row from its onset to its end, one pixel short so
    repeated notes stay apart; bar lines grey."""
    height, width = (scale.high - scale.low + 1) * SEMITONE_PX, math.ceil(scale.end * QUARTER_PX) + 1
    image = torch.ones(3, height, width)
    for pitch in range(scale.low + -scale.low % 12, scale.high + 1, 12):
        row = (scale.high - pitch) * SEMITONE_PX
        image[:, row : row + SEMITONE_PX] = C_ROW_GREY
    for bar in piece.bars:
        if bar.start < scale.end:
            image[:, :, int(bar.start * QUARTER_PX)] = BAR_LINE_GREY
    colour = torch.tensor(NOTE_COLOUR)[:, None, None]
    for note in piece.notes:
        row = (scale.high - note.pitch) * SEMITONE_PX
        start = int(note.onset * QUARTER_PX)
        stop = max(start + 1, int((note.onset + note.duration) * QUARTER_PX) - 1)
        image[:, row : row + SEMITONE_PX, start:stop] = colour
    return image


def piano_rolls(pieces: Sequence[Piece]) -> torch.Tensor:
    """(N, 3, H, W): the pieces' rolls on one scale, to tile into one picture."""
    scale = RollScale.of(pieces)
    return torch.stack([piano_roll(piece, scale) for piece in pieces])
