"""Piano rolls: pieces drawn as images (time to the right, pitch upwards), for the loggers and as PNG files."""

from __future__ import annotations

import math
from collections.abc import Sequence
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


def piano_rolls(pieces: Sequence[Piece]) -> torch.Tensor:
    """(N, 3, H, W) images in [0, 1] of the pieces on one scale: the pitches all of them span (two semitones of
    margin), and the length of the longest. Each note is a bar of its pitch's row from its onset to its end, one
    pixel short, so repeated notes stay apart; bar lines are grey."""
    notes = [note for piece in pieces for note in piece.notes]
    low = min((n.pitch for n in notes), default=60) - 2
    high = max((n.pitch for n in notes), default=72) + 2
    end = max([n.onset + n.duration for n in notes] + [Fraction(4)])
    height, width = (high - low + 1) * SEMITONE_PX, math.ceil(end * QUARTER_PX) + 1
    images = torch.ones(len(pieces), 3, height, width)
    for pitch in range(low + -low % 12, high + 1, 12):
        row = (high - pitch) * SEMITONE_PX
        images[:, :, row : row + SEMITONE_PX] = C_ROW_GREY
    colour = torch.tensor(NOTE_COLOUR)[:, None, None]
    for image, piece in zip(images, pieces, strict=True):
        for bar in piece.bars:
            if bar.start < end:
                image[:, :, int(bar.start * QUARTER_PX)] = BAR_LINE_GREY
        for note in piece.notes:
            row = (high - note.pitch) * SEMITONE_PX
            start = int(note.onset * QUARTER_PX)
            stop = max(start + 1, int((note.onset + note.duration) * QUARTER_PX) - 1)
            image[:, row : row + SEMITONE_PX, start:stop] = colour
    return images
