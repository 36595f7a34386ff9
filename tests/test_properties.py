"""Properties that hold for any input (hypothesis): the chunker tiles any duration with any
silence layout, silence detection answers as pydub does, normalisation is idempotent and a
text scores WER 0 against itself."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydub import AudioSegment
from pydub.silence import detect_silence

from pipeline.audio.chunk import ChunkOptions, detect_silences, pick_silence, plan_tiling
from pipeline.core.types import SAMPLE_RATE
from pipeline.quality.score import normalize_text, normalize_words, score_texts

MAX_TOTAL = 4 * 3600 * SAMPLE_RATE  # four hours of samples


@st.composite
def chunk_options(draw: st.DrawFn) -> ChunkOptions:
    max_chunk_s = draw(st.floats(1.0, 30.0))
    search_s = draw(st.floats(0.05, max_chunk_s))
    return ChunkOptions(
        max_chunk_s=max_chunk_s,
        min_chunk_s=draw(st.floats(0.0, max_chunk_s)),
        search_s=search_s,
        min_silence_ms=draw(st.integers(1, int(search_s * 1000))),
        step_ms=draw(st.integers(1, int(search_s * 1000))),
        long_chunk_s=draw(st.floats(1.0, 600.0)),
        min_chunks=draw(st.integers(1, 20)),
    )


@st.composite
def silence_layouts(draw: st.DrawFn, total: int) -> list[tuple[int, int]]:
    """Sorted, disjoint [start, end) silences inside [0, total) samples."""
    edges = sorted(set(draw(st.lists(st.integers(0, max(total, 0)), max_size=60))))
    return [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=False) if b > a]


def silence_finder(silences: list[tuple[int, int]], min_len: int):
    """The real rule (longest silence in the region, its middle; else the region's end) over
    a made-up silence layout instead of audio."""

    def find(start: int, lo: int, hi: int) -> tuple[int, str]:
        inside = [
            (max(a, lo), min(b, hi)) for a, b in silences if min(b, hi) - max(a, lo) >= min_len
        ]
        if inside:
            a, b = pick_silence(inside)
            return (a + b) // 2, "silence"
        return hi, "quietest"

    return find


def assert_tiles(bounds: list[tuple[int, int, str]], total: int, options: ChunkOptions) -> None:
    # A long episode's chunks may be longer than max_chunk_s: whole windows, up to long_chunk_s.
    max_n = int(options.core_max_s_for(total / SAMPLE_RATE) * SAMPLE_RATE)
    assert max_n <= max(options.max_chunk_s, options.long_chunk_s) * SAMPLE_RATE
    if total > 0 and options.chunk_s_for(total / SAMPLE_RATE) > options.max_chunk_s:
        assert len(bounds) >= options.min_chunks  # long chunks only while there are enough
    if total == 0:
        assert bounds == []
        return
    assert bounds[0][0] == 0
    assert bounds[-1][1] == total
    for (_, end, _), (start, _, _) in zip(bounds, bounds[1:], strict=False):
        assert start == end  # no gap, no overlap, in order
    for start, end, _ in bounds:
        assert 0 < end - start <= max_n


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), options=chunk_options(), total=st.integers(0, MAX_TOTAL))
def test_chunks_tile_any_duration_and_silence_layout(
    data: st.DataObject, options: ChunkOptions, total: int
) -> None:
    silences = data.draw(silence_layouts(total))
    min_len = options.min_silence_ms * SAMPLE_RATE // 1000
    bounds = plan_tiling(total, options, silence_finder(silences, min_len))
    assert_tiles(bounds, total, options)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), options=chunk_options(), total=st.integers(0, 20 * 60 * SAMPLE_RATE))
def test_chunks_tile_whatever_the_cut_finder_answers(
    data: st.DataObject, options: ChunkOptions, total: int
) -> None:
    """A finder that answers anything (before the region, past it, negative) cannot break the
    tiling: the planner keeps each cut inside the region the rules allow."""
    wild = st.integers(-(10**9), 10**9)
    bounds = plan_tiling(total, options, lambda start, lo, hi: (data.draw(wild), "silence"))
    assert_tiles(bounds, total, options)


@st.composite
def bursty_audio(draw: st.DrawFn) -> np.ndarray:
    """int16 mono audio made of stretches of silence, faint noise and loud noise."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    parts = []
    for _ in range(draw(st.integers(0, 8))):
        n = draw(st.integers(1, 6000))
        amp = draw(st.sampled_from([0, 3, 40, 400, 4000, 30000]))
        parts.append(np.clip(rng.standard_normal(n) * amp, -32768, 32767))
    return np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)


@settings(max_examples=200, deadline=None)
@given(
    samples=bursty_audio(),
    min_ms=st.sampled_from([1, 5, 20, 250, 500]),
    threshold=st.floats(-80.0, -5.0),
    seek_ms=st.sampled_from([1, 7, 10]),
)
def test_silence_detection_answers_as_pydub(
    samples: np.ndarray, min_ms: int, threshold: float, seek_ms: int
) -> None:
    segment = AudioSegment(
        data=samples.tobytes(), sample_width=2, frame_rate=SAMPLE_RATE, channels=1
    )
    expected = [
        tuple(r)
        for r in detect_silence(segment, min_ms, silence_thresh=threshold, seek_step=seek_ms)
    ]
    assert detect_silences(samples, min_ms, threshold, seek_ms) == expected


texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=80) | st.lists(
    st.sampled_from(
        [
            "the",
            "a",
            "Mr.",
            "Dr.",
            "St.",
            "twenty",
            "one",
            "21",
            "1st",
            "2,000",
            "$5",
            "5%",
            "£3",
            "and/or",
            "don't",
            "it's",
            "hmm",
            "uh",
            "[music]",
            "(laughs)",
            "colour",
            "color",
            "...",
            "—",
            "–",
            "“quoted”",
            "‘x’",
            "½",
            "3.5",
            "Okay,",
            "O.K.",
            "U.S.",
            "e-mail",
            "I'm",
            "we'll",
            "1990s",
            "'90s",
            "one-half",
            "10:30",
            "a.m.",
            "#1",
            "&",
            "@",
            "\n",
        ]
    ),
    max_size=30,
).map(" ".join)


@settings(max_examples=400, deadline=None)
@given(texts)
def test_normalisation_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@settings(max_examples=300, deadline=None)
@given(texts)
def test_a_text_scores_zero_against_itself(text: str) -> None:
    if not normalize_words(text):
        return  # no words: a reference without words is refused (tested elsewhere)
    score = score_texts(text, text)
    assert score.wer == 0.0
    assert score.cer == 0.0
