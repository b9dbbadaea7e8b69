"""Scores <-> pieces (`genlab.data.music_tokens`) with music21: reading MIDI, MusicXML and ABC files and the Bach
chorales of music21's corpus, writing generated pieces as MIDI and MusicXML. Needs the `[music]` extra."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from genlab.data.music_tokens import Bar, Note, Piece, lay_bars, quantize, score_order
from genlab.errors import DataError, one_line
from genlab.extras import import_extra

#: Parts of a written score at most: MIDI's 16 channels, less the drums' (music21 gives each part a channel).
MAX_VOICES = 15
#: The files `data=music_folder` reads (music21 parses each by its suffix).
SCORE_SUFFIXES = (".mid", ".midi", ".musicxml", ".mxl", ".xml", ".abc", ".krn")


def music21(needed_for: str = "music data") -> Any:
    """The music21 package, or the one-line error naming the `[music]` extra."""
    return import_extra("music21", "music", needed_for)


def piece_of_score(score: Any, resolution: int, max_duration: Fraction) -> Piece:
    """The notes of every part of a music21 score on a grid of 1/resolution quarter note (ties merged, grace notes
    and unpitched percussion left out, durations capped at `max_duration`), in bars laid by its time signatures.

    A pickup bar is filled out with a rest, so the first bar is whole; bars follow the time signatures from there
    (a score whose measures are irregular, e.g. split at a repeat, is rebarred; the timing of its notes is kept).
    """
    m21 = music21()
    score = score.stripTies()
    first_measure = next(iter(score.recurse().getElementsByClass(m21.stream.Measure)), None)
    shift = Fraction(first_measure.paddingLeft) if first_measure is not None else Fraction(0)
    flat = score.flatten()
    pitched: dict[tuple[Fraction, int], Fraction] = {}
    for element in flat.notes:
        if not isinstance(element, (m21.note.Note, m21.chord.Chord)) or element.duration.isGrace:
            continue
        onset = quantize(element.offset + shift, resolution)
        end = quantize(element.offset + shift + element.quarterLength, resolution)
        duration = min(max(end - onset, Fraction(1, resolution)), max_duration)
        for pitch in element.pitches:
            key = (onset, pitch.midi)  # one note per onset and pitch: unisons of two voices sound as one
            pitched[key] = max(pitched.get(key, duration), duration)
    notes = [Note(onset, duration, pitch) for (onset, pitch), duration in pitched.items()]
    meters: dict[Fraction, str] = {}
    for signature in flat.getElementsByClass(m21.meter.TimeSignature):  # each part states its own: one per time
        time = quantize(signature.offset + shift, resolution) if signature.offset else Fraction(0)
        meters[time] = signature.ratioString
    end = max((note.onset for note in notes), default=Fraction(0))
    return Piece(sorted(notes, key=score_order), lay_bars(sorted(meters.items()), end + Fraction(1, resolution)))


def voices(notes: list[Note]) -> list[list[Note]]:
    """The notes as at most MAX_VOICES lines that never overlap themselves, from the top: each note (highest first
    at an onset) goes to the first line that is free by then. A chorale comes back as its four voices, mostly.

    A note that finds all MAX_VOICES lines busy (only in broken samples) takes the line that frees first, whose
    note is cut short where the new one starts, or is left out if that note starts at the same time.
    """
    lines: list[list[Note]] = []
    for note in sorted(notes, key=score_order):
        line = next((line for line in lines if line[-1].onset + line[-1].duration <= note.onset), None)
        if line is not None:
            line.append(note)
        elif len(lines) < MAX_VOICES:
            lines.append([note])
        else:
            line = min(lines, key=lambda busy: busy[-1].onset + busy[-1].duration)
            if line[-1].onset < note.onset:
                line[-1] = replace(line[-1], duration=note.onset - line[-1].onset)
                line.append(note)
    return lines


def score_of_piece(piece: Piece, title: str = "genlab") -> Any:
    """A music21 score of the piece: one part per line of `voices`, the piece's time signatures, a piano sound."""
    m21 = music21("writing music")
    score = m21.stream.Score()
    score.metadata = m21.metadata.Metadata(title=title)
    meters = [bar for i, bar in enumerate(piece.bars) if i == 0 or bar.meter != piece.bars[i - 1].meter]
    for number, line in enumerate(voices(piece.notes) or [[]]):
        part = m21.stream.Part(id=f"voice{number + 1}")
        part.insert(0, m21.instrument.Piano())
        for bar in meters:
            part.insert(bar.start, m21.meter.TimeSignature(bar.meter))
        for note in line:
            part.insert(note.onset, m21.note.Note(note.pitch, quarterLength=note.duration))
        if not line:
            part.insert(0, m21.note.Rest(quarterLength=(piece.bars or [Bar(Fraction(0), "4/4")])[0].length))
        score.insert(0, part)
    return score


def write_scores(piece: Piece, stem: Path) -> list[Path]:
    """The piece as MIDI (`stem.mid`) and MusicXML (`stem.musicxml`)."""
    score = score_of_piece(piece, title=stem.name)
    written = [stem.with_suffix(".mid"), stem.with_suffix(".musicxml")]
    score.write("midi", fp=str(written[0]))
    score.write("musicxml", fp=str(written[1]))
    return written


def read_file(path: Path) -> list[Any]:
    """The scores of one file (an ABC file may hold many tunes); a DataError naming the file when music21 cannot
    read it."""
    m21 = music21()
    try:
        parsed = m21.converter.parse(str(path))
    except Exception as exc:  # music21 raises many kinds of errors on a broken file
        reason = f"{type(exc).__name__}: {one_line(str(exc))[:200]}" if str(exc) else type(exc).__name__
        raise DataError(f"cannot read {path}: {reason}") from None
    return list(parsed.scores) if isinstance(parsed, m21.stream.Opus) else [parsed]


def bach_chorales() -> Iterator[Any]:
    """The 371 four-part chorales of music21's corpus (Riemenschneider's numbering), parsed one by one."""
    yield from music21("data=bach_chorales").corpus.chorales.Iterator()
