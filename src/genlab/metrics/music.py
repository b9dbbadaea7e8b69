"""Statistics of a set of pieces, to compare generated music with held-out music (in the spirit of Yang & Lerch
2020, "On the evaluation of generative models in music"): pitch classes, pitch range, note durations, polyphony and
how much of each piece stays in its key.

Histograms are compared by their total variation distance: half the L1 distance between the normalised
histograms, in [0, 1] (0: the same distribution; 1: no value in common); it is the share of notes that would have
to change class to turn one histogram into the other. A set without notes is at distance 1 from any set with notes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from fractions import Fraction

import numpy as np

from genlab.data.music_tokens import Note

#: Krumhansl & Kessler's (1982) probe-tone ratings of the 12 pitch classes above the tonic, major and minor keys.
MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])
#: The pitch classes of a key, above its tonic: the major scale; in minor, the natural minor scale plus the leading
#: tone (the raised seventh of the harmonic minor, part of the key in common-practice music). Bach's chorales have
#: 94% of their notes in key by this count (the rest: chromatic passing notes, secondary dominants).
IN_MAJOR = frozenset({0, 2, 4, 5, 7, 9, 11})
IN_MINOR = frozenset({0, 2, 3, 5, 7, 8, 10, 11})

Piece = Sequence[Note]


def total_variation(p: Mapping[Hashable, float], q: Mapping[Hashable, float]) -> float:
    """Half the L1 distance between two histograms (counts), each normalised to sum to 1; 1 if one is empty."""
    p_total, q_total = sum(p.values()), sum(q.values())
    if not p_total or not q_total:
        return 0.0 if p_total == q_total else 1.0
    keys = set(p) | set(q)
    return 0.5 * sum(abs(p.get(k, 0) / p_total - q.get(k, 0) / q_total) for k in keys)


def pitch_classes(pieces: Sequence[Piece]) -> Counter[int]:
    """How many notes of each pitch class (0 = C) the pieces hold."""
    return Counter(note.pitch % 12 for piece in pieces for note in piece)


def durations(pieces: Sequence[Piece]) -> Counter[Fraction]:
    """How many notes of each duration (quarter notes) the pieces hold."""
    return Counter(note.duration for piece in pieces for note in piece)


def pitch_range(piece: Piece) -> int:
    """Semitones from the lowest to the highest note (0 for a piece without notes)."""
    return max(n.pitch for n in piece) - min(n.pitch for n in piece) if piece else 0


def polyphony(piece: Piece) -> float:
    """The mean number of notes sounding together, over the time when at least one sounds (0 without notes)."""
    total = sum(note.duration for note in piece)
    sounding = Fraction(0)
    end = None
    for note in sorted(piece):  # the measure of the union of the notes' intervals
        start, stop = note.onset, note.onset + note.duration
        if end is None or start >= end:
            sounding += stop - start
            end = stop
        elif stop > end:
            sounding += stop - end
            end = stop
    return float(total / sounding) if sounding else 0.0


def estimate_key(piece: Piece) -> tuple[int, str] | None:
    """(tonic pitch class, "major" | "minor") whose Krumhansl-Kessler profile correlates best with the piece's
    duration-weighted pitch-class distribution (the Krumhansl-Schmuckler algorithm); None without notes."""
    weights = np.zeros(12)
    for note in piece:
        weights[note.pitch % 12] += float(note.duration)
    if not weights.any():
        return None
    centered = weights - weights.mean()
    norm = np.linalg.norm(centered) or 1.0  # all twelve equally long: no key stands out, C major is as good as any
    candidates = [
        (
            float(centered @ np.roll(profile - profile.mean(), tonic))
            / (norm * np.linalg.norm(profile - profile.mean())),
            -index,
            tonic,
            mode,
        )
        for index, (mode, profile) in enumerate((("major", MAJOR_PROFILE), ("minor", MINOR_PROFILE)))
        for tonic in range(12)
    ]
    _, _, tonic, mode = max(candidates)
    return tonic, mode


def in_key(pieces: Sequence[Piece]) -> float:
    """The fraction of notes whose pitch class belongs to their piece's estimated key (see IN_MAJOR, IN_MINOR)."""
    inside = total = 0
    for piece in pieces:
        key = estimate_key(piece)
        if key is None:
            continue
        tonic, mode = key
        scale = IN_MAJOR if mode == "major" else IN_MINOR
        inside += sum((note.pitch - tonic) % 12 in scale for note in piece)
        total += len(piece)
    return inside / total if total else 0.0


def describe(pieces: Sequence[Piece]) -> dict[str, float]:
    """The set's own statistics: mean notes, pitch range and polyphony per piece (over pieces with notes), and the
    fraction of notes in key."""
    sounding = [piece for piece in pieces if piece]
    return {
        "notes": float(np.mean([len(piece) for piece in pieces])) if pieces else 0.0,
        "pitch_range": float(np.mean([pitch_range(piece) for piece in sounding])) if sounding else 0.0,
        "polyphony": float(np.mean([polyphony(piece) for piece in sounding])) if sounding else 0.0,
        "in_key": in_key(pieces),
    }


def compare(generated: Sequence[Piece], reference: Sequence[Piece]) -> dict[str, float]:
    """`describe(generated)`, plus the distances of its pitch-class and duration histograms from the reference's."""
    return {
        "pitch_class_distance": total_variation(pitch_classes(generated), pitch_classes(reference)),
        "duration_distance": total_variation(durations(generated), durations(reference)),
        **describe(generated),
    }
