"""Music end to end: the REMI encoding round trip through music21 scores and MIDI files, excerpts and transpositions,
splits by piece, the music statistics on sets with known answers, genlab-train and genlab-sample on a tiny folder of
scores (MIDI that music21 reads back), the chorale cache, and bad input as one line."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import pytest
from requires import extra_hint

pytest.importorskip("music21", reason=extra_hint("music"))
import music21
from conftest import QUIET_TRAIN, train_env
from inprocess import call_entrypoint
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from genlab.config import judged_by
from genlab.data import music as music_data
from genlab.data.music import MusicFolder, shape_of
from genlab.data.music_tokens import Bar, Note, Piece, decode, encode, excerpts, transpose
from genlab.data.scores import piece_of_score, score_of_piece, write_scores
from genlab.metrics import music as stats

F = Fraction
C_MAJOR_SCALE = [Note(F(i), F(1), pitch) for i, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72])]


def score_of(parts: list[list[tuple[float, int | tuple[int, ...], float]]], meters=((0, "4/4"),)):
    """A music21 score: one part per list of (offset, pitch or chord, quarter length), the given time signatures."""
    score = music21.stream.Score()
    for notes in parts:
        part = music21.stream.Part()
        for offset, meter in meters:
            part.insert(offset, music21.meter.TimeSignature(meter))
        for offset, pitch, length in notes:
            element = music21.chord.Chord(list(pitch)) if isinstance(pitch, tuple) else music21.note.Note(pitch)
            element.quarterLength = length
            part.insert(offset, element)
        score.insert(0, part)
    return score


def notes_of(score) -> list[tuple[Fraction, int, Fraction]]:
    """(onset, MIDI pitch, duration) of every note of a music21 score, ties merged, in order."""
    flat = score.stripTies().flatten()
    return sorted((F(n.offset), p.midi, F(n.quarterLength)) for n in flat.notes for p in n.pitches)


#: Two voices over a 4/4 bar and two 3/4 bars: a chord, a rest, a sixteenth, notes tied across the bar lines.
VOICES = [
    [(0, 72, 1), (1, 74, 0.5), (1.5, 76, 0.25), (1.75, 77, 0.25), (2, 79, 3), (5, 77, 1), (6, 76, 4)],
    [(0, (48, 55), 2), (3, 53, 2.5), (5.5, 52, 0.5), (6, 48, 3)],
]
VOICE_NOTES = sorted(
    (F(onset), p, F(length))
    for voice in VOICES
    for onset, pitch, length in voice
    for p in (pitch if isinstance(pitch, tuple) else (pitch,))
)


def test_score_to_tokens_to_score_keeps_pitches_onsets_and_durations(tmp_path) -> None:
    original = score_of(VOICES, meters=((0, "4/4"), (4, "3/4")))
    original.write("musicxml", fp=str(tmp_path / "in.musicxml"))  # written out: the notes over bar lines get ties
    piece = piece_of_score(music21.converter.parse(str(tmp_path / "in.musicxml")), 4, F(8))
    tokens = encode(piece)
    assert tokens[:6] == ["Bar", "Meter_4/4", "Pos_0", "Pitch_72", "Dur_1", "Pitch_55"]
    assert tokens.count("Bar") == 2 and tokens.count("Meter_3/4") == 1 and "Pos_7/4" in tokens
    decoded = decode(tokens)
    assert decoded.errors == 0 and decoded.notes == piece.notes and decoded.bars == piece.bars
    assert notes_of(score_of_piece(decoded)) == VOICE_NOTES
    midi, xml = write_scores(decoded, tmp_path / "out")
    assert notes_of(music21.converter.parse(str(midi))) == VOICE_NOTES
    assert notes_of(music21.converter.parse(str(xml))) == VOICE_NOTES
    signatures = music21.converter.parse(str(xml)).parts[0].recurse().getElementsByClass(music21.meter.TimeSignature)
    assert [signature.ratioString for signature in signatures] == ["4/4", "3/4"]


def test_onsets_and_durations_snap_to_the_grid_and_long_notes_are_capped() -> None:
    score = score_of([[(F(1, 3), 60, F(1, 3)), (1, 62, 0.1), (2, 64, 12)]])
    notes = [(n.onset, n.pitch, n.duration) for n in piece_of_score(score, 4, F(8)).notes]
    assert notes == [(F(1, 4), 60, F(1, 2)), (F(1), 62, F(1, 4)), (F(2), 64, F(8))]
    notes = [(n.onset, n.duration) for n in piece_of_score(score, 12, F(8)).notes]
    assert notes[0] == (F(1, 3), F(1, 3)), "a resolution of 12 keeps triplets"


def test_a_chorale_with_a_pickup_round_trips_through_midi(tmp_path) -> None:
    chorale = music21.corpus.parse("bach/bwv269")  # "Aus meines Herzens Grunde": 3/4, a two-beat pickup
    piece = piece_of_score(chorale, 4, F(8))
    assert piece.notes[0].onset == 2, "the pickup bar is filled out with a rest"
    tokens = encode(piece)
    assert tokens[:3] == ["Bar", "Meter_3/4", "Pos_2"]
    midi, _ = write_scores(decode(tokens), tmp_path / "chorale")
    assert len(music21.converter.parse(str(midi)).parts) == 4, "the four voices come back as four parts"
    unisons: dict[tuple[Fraction, int], Fraction] = {}  # two voices on one pitch sound as one note
    for onset, pitch, length in notes_of(chorale):
        unisons[onset + 2, pitch] = max(length, unisons.get((onset + 2, pitch), length))
    assert len(unisons) < len(notes_of(chorale))
    assert notes_of(music21.converter.parse(str(midi))) == sorted((*key, length) for key, length in unisons.items())


def test_a_sample_with_too_many_notes_at_once_still_writes_a_playable_file(tmp_path) -> None:
    crowded = [Note(F(0), F(4), 40 + 2 * i) for i in range(17)] + [Note(F(1), F(1), 90)]
    midi, _ = write_scores(Piece(crowded, [Bar(F(0), "4/4")]), tmp_path / "crowded")
    parsed = music21.converter.parse(str(midi))
    assert len(parsed.parts) == 15, "MIDI's 16 channels, less the drums'"
    assert len(notes_of(parsed)) == 16, "the two lowest of 17 notes on one onset are left out, none after them"


def test_decoding_skips_tokens_that_break_the_grammar() -> None:
    tokens = ["Pitch_60", "Bar", "Meter_3/4", "Pos_1", "Pitch_60", "Dur_1", "Pos_0", "Dur_1", "Pitch_62"]
    tokens += ["Pitch_64", "Dur_1/2", "Bar", "Pos_2", "Pitch_67", "Dur_2", "Pos_3", "Pitch_65"]
    piece = decode(tokens)
    # a pitch before any bar, a position going back, a duration without a pitch, a pitch after a pitch, a position
    # past the end of a 3/4 bar and a pitch left without a duration
    assert piece.errors == 6
    assert piece.notes == [Note(F(1), F(1), 60), Note(F(1), F(1, 2), 62), Note(F(5), F(2), 67)]
    assert [bar.start for bar in piece.bars] == [0, 3]


def test_long_pieces_are_cut_into_whole_bars_and_transposed_within_midi_range() -> None:
    bars = [Bar(F(4 * i), "4/4") for i in range(6)]
    notes = [Note(F(4 * i + j), F(1), 60 + i) for i in range(6) for j in range(i % 3 + 1)]
    tokens = encode(Piece(notes, bars))
    cut = excerpts(tokens, 12)
    assert all(len(excerpt) <= 12 and excerpt[:2] == ["Bar", "Meter_4/4"] for excerpt in cut)
    assert [decode(e).notes[0].pitch for e in cut] == [60, 62, 63, 65], "every excerpt starts at a bar line"
    assert sum(len(decode(e).notes) for e in cut) == len(notes)
    short = excerpts(tokens, 5)
    assert [note.pitch for e in short for note in decode(e).notes] == [60, 63], "longer bars are left out"
    assert transpose(tokens, 2)[3] == "Pitch_62" and transpose(tokens, 63) is None
    assert shape_of(transpose(tokens, -5)) == shape_of(tokens) and shape_of(["Bar"]) is None


def test_statistics_on_sets_with_known_answers() -> None:
    scale, triad = C_MAJOR_SCALE, [Note(F(0), F(4), p) for p in (60, 64, 67)]
    assert stats.estimate_key(scale) == (0, "major") and stats.in_key([scale]) == 1.0
    a_minor = [Note(F(i), F(1), p) for i, p in enumerate([57, 59, 60, 62, 64, 65, 68, 69, 64, 57])]
    assert stats.estimate_key(a_minor) == (9, "minor") and stats.in_key([a_minor]) == 1.0, "G# leads to A"
    assert stats.in_key([[*scale, Note(F(8), F(1), 61)]]) == pytest.approx(8 / 9)
    same = stats.compare([scale, triad], [scale, triad])
    assert same["pitch_class_distance"] == same["duration_distance"] == 0.0
    assert same["pitch_range"] == pytest.approx((12 + 7) / 2) and same["polyphony"] == pytest.approx((1 + 3) / 2)
    apart = stats.compare([[Note(F(0), F(1), 61)]], [scale])
    assert apart["pitch_class_distance"] == 1.0 and apart["duration_distance"] == 0.0
    assert stats.total_variation({0: 1, 1: 1}, {0: 1}) == pytest.approx(0.5)
    overlapping = [Note(F(0), F(2), 60), Note(F(1), F(2), 64), Note(F(4), F(1), 67)]
    assert stats.polyphony(overlapping) == pytest.approx(5 / 4), "5 quarters of notes over 4 quarters of sound"
    empty = stats.compare([[]], [scale])
    assert empty == {**empty, "pitch_class_distance": 1.0, "notes": 0.0, "in_key": 0.0, "polyphony": 0.0}


def test_piano_rolls_draw_each_note_in_its_row_on_one_scale() -> None:
    from genlab.data.piano_roll import NOTE_COLOUR, QUARTER_PX, SEMITONE_PX, piano_rolls

    short = Piece([Note(F(0), F(1), 60), Note(F(1), F(1), 60)], [Bar(F(0), "4/4")])
    long = Piece([Note(F(0), F(8), 67)], [Bar(F(0), "4/4"), Bar(F(4), "4/4")])
    rolls = piano_rolls([short, long])
    assert rolls.shape == (2, 3, (69 - 58 + 1) * SEMITONE_PX, 8 * QUARTER_PX + 1), "pitches 58-69, 8 quarter notes"
    row_of_c = (69 - 60) * SEMITONE_PX
    drawn = rolls[0, :, row_of_c, :].T.tolist()
    ink = [i for i, pixel in enumerate(drawn) if pixel == pytest.approx(list(NOTE_COLOUR))]
    assert ink == [*range(QUARTER_PX - 1), *range(QUARTER_PX, 2 * QUARTER_PX - 1)], "a gap between repeated Cs"
    assert rolls[1, 0, (69 - 67) * SEMITONE_PX, 4 * QUARTER_PX] == pytest.approx(NOTE_COLOUR[0]), "G held over the bar"


def write_tiny_corpus(folder: Path, count: int = 12) -> None:
    """`count` short two-voice pieces as MIDI (one as MusicXML, one a transposed repeat), plus two ABC tunes."""
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(count):
        melody = [(i, 60 + (i * (k + 1)) % 12, 1) for i in range(8)]
        bass = [(2 * i, 48 + (i * (k + 2)) % 7, 2) for i in range(4)]
        score = score_of([melody, bass])
        score.write(
            "musicxml" if k == 0 else "midi", fp=str(folder / f"piece{k:02d}.{'musicxml' if k == 0 else 'mid'}")
        )
    score_of([[(i, 65 + (i * 2) % 12, 1) for i in range(8)], [(2 * i, 53 + (i * 3) % 7, 2) for i in range(4)]]).write(
        "midi", fp=str(folder / "piece01_in_f.mid")
    )  # piece01 moved up a fourth: the same piece
    (folder / "tunes.abc").write_text(
        "X:1\nT:One\nM:6/8\nL:1/8\nK:G\nGAB c2d|e2d B2A|G3 G3|]\n\nX:2\nT:Two\nM:3/4\nL:1/4\nK:D\nD E F|A2 B|d3|]\n"
    )


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scores")
    write_tiny_corpus(folder)
    return folder


def test_splits_hold_whole_pieces_and_a_repeat_only_once(tiny_corpus, tmp_path) -> None:
    data = MusicFolder(
        path=str(tiny_corpus), cache_dir=str(tmp_path), val_size=3, test_size=3, max_length=30, transpose=2
    )
    spec = data.spec
    pieces = {split: {shape_of(text.split()) for text in items} for split, items in data.items.items()}
    assert sum(map(len, pieces.values())) == 14, "12 MIDI and MusicXML pieces, 2 ABC tunes; the repeat is dropped"
    assert not pieces["train"] & pieces["val"] and not pieces["val"] & pieces["test"]
    assert not pieces["train"] & pieces["test"]
    # pieces of about 35 tokens are cut into excerpts (in their piece's split); training pieces come in 5 keys
    assert spec.shape[0] <= 31 and spec.tokenizer.kind == "remi"
    assert len(data.datasets["val"]) == sum(len(excerpts(text.split(), 30)) for text in data.items["val"])
    assert len(data.datasets["train"]) == 5 * sum(len(excerpts(text.split(), 30)) for text in data.items["train"])
    assert 2 < spec.tokens_per_unit["note"]["val"] < 4 and spec.tokens_per_char is None
    # a two-bar piece in 4/4 (or an ABC tune) spans 6-8 quarter notes and ends with an end token per excerpt
    assert 3 < spec.tokens_per_unit["quarter"]["val"] < 8
    again = MusicFolder(path=str(tiny_corpus), cache_dir=str(tmp_path), val_size=3, test_size=3, split_seed=1)
    assert again.spec.shape[0] > 31 and {shape_of(t.split()) for t in again.items["val"]} != pieces["val"]
    assert len(list((tmp_path / "music").glob("music_folder-*.json"))) == 1, "parsed once, then read from the cache"


def test_bach_chorales_are_read_once_then_from_the_cache(monkeypatch, tmp_path) -> None:
    chorales = [music21.corpus.parse(f"bach/bwv{number}") for number in ("269", "347", "153.1")]
    monkeypatch.setattr(music_data, "bach_chorales", lambda: iter(chorales))
    data = music_data.BachChorales(cache_dir=str(tmp_path), val_size=1, test_size=1)
    assert len(data.read_corpus()["train"]) == 3
    monkeypatch.setattr(music_data, "bach_chorales", lambda: pytest.fail("the corpus was parsed again"))
    assert data.read_corpus() == music_data.BachChorales(cache_dir=str(tmp_path)).read_corpus()
    assert len(list((tmp_path / "music").glob("bach_chorales-*.json"))) == 1


TINY_MUSIC = [
    "model=transformer",
    "model.net.n_layer=1",
    "model.net.n_head=2",
    "model.net.n_embd=16",
    "data.val_size=3",
    "data.test_size=3",
    "data.batch_size=4",
    "trainer.max_steps=4",
    "trainer.max_epochs=1",
    "trainer.val_check_interval=2",
    "metrics.num_samples=6",
    "metrics.num_val_samples=2",
    "metrics.written=2",
    *QUIET_TRAIN,
]


def test_music_folder_trains_and_writes_midi_that_music21_reads(genlab_train, tiny_corpus, tmp_path) -> None:
    run = genlab_train("data=music_folder", f"data.path={tiny_corpus}", "data.transpose=1", *TINY_MUSIC).check()
    metrics = run.metrics
    assert metrics["judged_metric"] == "val/loss" and metrics["judged_mode"] == "min"
    assert metrics["test/loss_per_note"] > metrics["test/loss"] > 0, "a note costs more than one token"
    assert metrics["test/loss_per_quarter"] > metrics["test/loss"], "so does a quarter note of music"
    for name in ("pitch_class_distance", "duration_distance", "in_key", "invalid_tokens"):
        assert 0.0 <= metrics[f"test/{name}"] <= 1.0, name
    assert metrics["music_metrics"]["num_generated_test"] == 6 and metrics["music_metrics"]["num_reference_test"] == 3
    assert 0.5 < metrics["music_metrics"]["reference_test"]["in_key"] <= 1.0
    for midi in (run.dir / "samples" / "best").glob("*.mid"):
        music21.converter.parse(str(midi))
    assert len(list((run.dir / "samples").glob("step_*/sample_001.mid"))) == 2, "after each of the 2 validations"
    (events,) = {path.parent for path in (run.dir / "tensorboard").rglob("events.out.tfevents.*")}
    logged = EventAccumulator(str(events)).Reload().Tags()
    assert {"val/piano_rolls", "test/piano_rolls"} <= set(logged["images"])
    assert {"val/pitch_class_distance", "test/in_key", "test/loss_per_note"} <= set(logged["scalars"])

    sample = call_entrypoint("genlab-sample", [f"run={run.dir}", "n=3"], cwd=tmp_path, env=train_env(tmp_path))
    assert sample.returncode == 0, sample.stderr
    generated = run.dir / "generated"
    assert len((generated / "tokens.txt").read_text().splitlines()) == 3
    for i in range(3):
        music21.converter.parse(str(generated / f"sample_{i:03d}.mid"))
        assert (generated / f"sample_{i:03d}.musicxml").stat().st_size > 0
        assert (generated / f"sample_{i:03d}.png").read_bytes().startswith(b"\x89PNG")


def test_music_runs_are_judged_by_their_loss(compose_config) -> None:
    cfg = compose_config("experiment=gpt_bach_cpu")
    assert judged_by(cfg) == ("val/loss", "min") and cfg.metrics._target_.endswith("MusicMetrics")
    assert compose_config("experiment=gpt_bach").data._target_ == "genlab.data.music.BachChorales"


@pytest.mark.parametrize("case", ["empty folder", "corrupt MIDI", "missing folder"])
def test_bad_music_folders_are_one_line(genlab_train, tmp_path, case: str) -> None:
    folder = tmp_path / "scores"
    if case != "missing folder":
        folder.mkdir()
    if case == "corrupt MIDI":
        (folder / "broken.mid").write_bytes(b"MThd\x00\x00\x00\x06\x00\x01\x00\x02garbage")
    run = genlab_train("data=music_folder", f"data.path={folder}", "model=transformer")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    (line,) = [line for line in run.stderr.splitlines() if line.startswith("genlab-train: error:")]
    expected = {
        "empty folder": "holds no score files",
        "corrupt MIDI": "no piece with notes could be read; cannot read",
        "missing folder": "is not a folder",
    }[case]
    assert expected in line


def test_missing_music_extra_and_music_metrics_on_text_are_one_line(genlab_train, monkeypatch, tmp_path) -> None:
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "music21", None)  # as if music21 were not installed
        run = genlab_train("data=bach_chorales", "model=transformer")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert 'data=bach_chorales needs music21, which is not installed: pip install "genlab[music]"' in run.stderr
    run = genlab_train("data=python_source", "data.max_chars=20000", "model=transformer", "metrics=music")
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert "metrics=music scores generated music, but the data is not music" in run.stderr
