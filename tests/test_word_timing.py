"""Word timings: the numpy DTW, words fitted to sound, the check against known parts, and
(the real tiny.en model on the espeak-ng parts fixture) every engine's words where heard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.asr.words import dtw_path, fit_words_to_sound
from pipeline.audio.analysis import FRAME_HOP_S
from pipeline.core.errors import ReferenceError
from pipeline.core.types import Word
from pipeline.quality.timing import Part, check_word_timing, read_parts

FIXTURES = Path(__file__).parent / "fixtures"


def _dtw_reference(x: np.ndarray) -> np.ndarray:
    """whisper.timing's dtw_cpu + backtrace, loop for loop, in plain Python (the spec)."""
    n, m = x.shape
    cost = np.full((n + 1, m + 1), np.inf)
    trace = -np.ones((n + 1, m + 1))
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    trace[0, :], trace[:, 0] = 2, 1
    i, j, path = n, m, []
    while i > 0 or j > 0:
        path.append((i - 1, j - 1))
        i, j = {0: (i - 1, j - 1), 1: (i - 1, j), 2: (i, j - 1)}[int(trace[i, j])]
    return np.array(path[::-1]).T


@pytest.mark.parametrize("seed", range(8))
def test_numpy_dtw_follows_whispers_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(1, 9)), int(rng.integers(1, 60))
    # A soft diagonal (what attention looks like) plus noise; and pure noise for odd seeds.
    diag = -np.exp(-((np.arange(n)[:, None] / n - np.arange(m)[None, :] / m) ** 2) * 50)
    x = (diag if seed % 2 == 0 else 0) + rng.normal(0, 0.3, (n, m))
    assert np.array_equal(dtw_path(x), _dtw_reference(x))


def test_numpy_dtw_path_is_monotonic_and_complete() -> None:
    path = dtw_path(np.random.default_rng(1).normal(size=(40, 700)))
    assert path.shape[0] == 2
    assert (path[:, 0] == 0).all() and path[0, -1] == 39 and path[1, -1] == 699
    steps = np.diff(path, axis=1)
    assert ((steps >= 0) & (steps <= 1)).all() and (steps.sum(axis=0) >= 1).all()


def _sounding(spans: list[tuple[float, float]], seconds: float) -> np.ndarray:
    """Loud frames where a frame's 64 ms window (centre at i * 10 ms + 32 ms) is inside a span."""
    centres = np.arange(int(seconds / FRAME_HOP_S)) * FRAME_HOP_S + 0.032
    return np.array([any(a <= c <= b for a, b in spans) for c in centres])


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        # Stretched back over 0.8 s of silence: the start moves to the sound (at 10.0 s).
        (Word(9.2, 10.4, " Hello", 0.9), (10.032, 10.4)),
        # Heard from its first frame to its last: left as the aligner put it.
        (Word(10.1, 10.5, " there", 0.9), (10.1, 10.5)),
        # Stretched forward over the silence after the sound (which ends at 11.0 s).
        (Word(10.6, 11.8, " again.", 0.9), (10.6, 10.968)),
        # Nothing heard inside: nothing to fit it to.
        (Word(12.0, 12.5, " um", 0.2), (12.0, 12.5)),
    ],
)
def test_words_are_fitted_to_the_sound(word: Word, expected: tuple[float, float]) -> None:
    sounding = _sounding([(10.0, 11.0)], 14.0)
    (fitted,) = fit_words_to_sound((word,), sounding, offset=0.0)
    assert (fitted.start, fitted.end) == pytest.approx(expected, abs=0.011)
    assert fitted.text == word.text and fitted.start <= fitted.end


def test_fitting_counts_from_the_samples_offset() -> None:
    # The same sound, in samples that start 100 s into the episode.
    sounding = _sounding([(10.0, 11.0)], 14.0)
    (fitted,) = fit_words_to_sound((Word(109.2, 110.4, " Hello", 0.9),), sounding, offset=100.0)
    assert fitted.start == pytest.approx(110.032, abs=0.011)


PARTS = (Part(1, 1.0, 4.0), Part(2, 5.0, 8.0), Part(3, 9.5, 10.3))


@pytest.mark.parametrize(
    ("starts", "parts_ok", "max_dev", "in_gaps"),
    [
        ([1.1, 2.0, 5.3, 6.0, 9.6], 3, 0.3, 0),
        ([1.1, 2.0, 4.6, 5.2, 9.6], 2, 0.4, 1),  # a word at 4.6 s: in a gap, and opens part 2
        ([0.5, 1.2, 5.0, 10.2], 2, 0.7, 1),  # 0.5 s: before the first part
        ([1.0, 5.9, 9.5], 2, 0.9, 0),  # part 2's first word 0.9 s late
        ([1.0, 5.0], 2, 0.0, 0),  # part 3 has no word
    ],
)
def test_word_timing_check_counts(
    starts: list[float], parts_ok: int, max_dev: float, in_gaps: int
) -> None:
    words = [Word(s, s + 0.2, f" w{k}", 0.9) for k, s in enumerate(starts)]
    check = check_word_timing(words, PARTS, window_s=0.8)
    assert check.parts_ok == parts_ok
    assert check.max_deviation_s == pytest.approx(max_dev)
    assert len(check.gap_words) == in_gaps
    assert check.passed is (parts_ok == 3 and in_gaps == 0)


def test_read_parts(tmp_path: Path) -> None:
    parts = read_parts(FIXTURES / "parts.tsv")
    assert [p.line for p in parts] == [1, 2, 3, 4] and parts[0].start_s == 1.0
    bad = tmp_path / "parts.tsv"
    bad.write_text("line\tstart\n1\t2.0\n")
    with pytest.raises(ReferenceError, match=r"parts\.tsv.*line, start_s, end_s"):
        read_parts(bad)
    bad.write_text("line\tstart_s\tend_s\n1\t5.0\t6.0\n2\t1.0\t2.0\n")
    with pytest.raises(ReferenceError, match="in order"):
        read_parts(bad)


# --- the real model --------------------------------------------------------------------------


def _transcribe(tmp_path: Path, **options: object):  # type: ignore[no-untyped-def]
    from pipeline.asr.options import TranscribeOptions
    from pipeline.asr.transcribe import transcribe_chunks
    from pipeline.audio.chunk import ChunkOptions, chunk_audio
    from pipeline.audio.decode import decode_audio
    from pipeline.core.transcript import merge_transcripts

    decoded = decode_audio(FIXTURES / "parts.mp3", tmp_path / "parts.wav")
    # Two chunks: the cut falls in a silence between turns, as on a long episode.
    manifest = chunk_audio(
        decoded,
        tmp_path / "chunks",
        "parts",
        ChunkOptions(max_chunk_s=9.0, min_chunk_s=3.0, search_s=5.0),
    )
    assert len(manifest.chunks) >= 2
    results = transcribe_chunks(manifest.chunks, TranscribeOptions(**options))  # type: ignore[arg-type]
    return merge_transcripts("parts", decoded.duration_s, results)


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        {"batch_size": 8},  # the batched engine (the default)
        {"batch_size": 1, "continue_in_window": False},  # whisper.transcribe
        {"backend": "faster-whisper", "batch_size": 4},
    ],
    ids=["batched", "whisper-transcribe", "faster-whisper"],
)
def test_every_engine_times_words_where_they_are_heard(
    tmp_path: Path, options: dict[str, object]
) -> None:
    from pipeline.core.types import to_dict, transcript_from_dict
    from pipeline.quality.timing import transcript_words

    transcript = _transcribe(tmp_path, **options)
    words = transcript_words(transcript)
    check = check_word_timing(words, read_parts(FIXTURES / "parts.tsv"))
    assert check.passed, check.as_dict()
    for seg in transcript.segments:
        assert seg.words, seg
        assert seg.start == seg.words[0].start and seg.end == seg.words[-1].end
        assert all(
            a.start <= a.end <= b.start + 1e-3
            for a, b in zip(seg.words, seg.words[1:], strict=False)
        )
        assert "".join(w.text for w in seg.words).strip() == seg.text
    # transcript.json carries them.
    assert transcript_from_dict(to_dict(transcript)).segments == transcript.segments


@pytest.mark.slow
def test_word_timings_do_not_change_the_text(tmp_path: Path) -> None:
    timed = _transcribe(tmp_path / "a", batch_size=8)
    plain = _transcribe(tmp_path / "b", batch_size=8, word_timestamps=False)
    assert [s.text for s in timed.segments] == [s.text for s in plain.segments]
    assert all(s.words is None for s in plain.segments)


# --- outputs -------------------------------------------------------------------------------------


def test_outputs_carry_the_words(tmp_path: Path) -> None:
    import html
    import io
    import json

    import jsonschema
    import webvtt
    from test_speakers import PODCAST_SCHEMA

    from pipeline.core.transcript import load_transcript, write_transcript
    from pipeline.core.types import Segment, SpeakerTurn, Transcript
    from pipeline.sources.reference import parse_reference_turns

    def seg(start: float, who: str, *words: str) -> Segment:
        timed = tuple(
            Word(start + 0.4 * k, start + 0.4 * k + 0.3, w, 0.9) for k, w in enumerate(words)
        )
        return Segment(start, timed[-1].end, "".join(words).strip(), 0, speaker=who, words=timed)

    transcript = Transcript(
        "ep",
        6.0,
        (seg(0.5, "Host", " Welcome", " back."), seg(2.0, "Guest", " Thanks", " &", " hi!")),
        (),
    )
    paths = write_transcript(transcript, tmp_path)
    assert load_transcript(paths["transcript.json"]) == transcript  # words and all
    # Podcasting 2.0 JSON: valid, one entry per word, each with its speaker and times.
    podcast = json.loads(paths["transcript.podcast.json"].read_text())
    jsonschema.validate(podcast, PODCAST_SCHEMA)
    assert [(s["speaker"], s["body"], s["startTime"]) for s in podcast["segments"]] == [
        ("Host", "Welcome", 0.5),
        ("Host", "back.", 0.9),
        ("Guest", "Thanks", 2.0),
        ("Guest", "&", 2.4),
        ("Guest", "hi!", 2.8),
    ]
    assert all(s["startTime"] < s["endTime"] for s in podcast["segments"])
    assert parse_reference_turns(paths["transcript.podcast.json"].read_bytes(), "p.json") == (
        SpeakerTurn("Host", "Welcome back."),
        SpeakerTurn("Guest", "Thanks & hi!"),
    )
    # VTT: a cue per segment, times and voices as a VTT reader reads them back.
    captions = webvtt.from_buffer(io.StringIO(paths["transcript.vtt"].read_text())).captions
    cues = [(c.voice, html.unescape(c.text), c.start, c.end) for c in captions]
    assert cues == [
        ("Host", "Welcome back.", "00:00:00.500", "00:00:01.200"),
        ("Guest", "Thanks & hi!", "00:00:02.000", "00:00:03.100"),
    ]
