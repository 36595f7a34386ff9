"""Scoring: normalisation, hand-computed WER of known pairs, and errors placed in chunks."""

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import ReferenceError
from pipeline.core.types import (
    ChunkTranscript,
    ModelInfo,
    Segment,
    Transcript,
    score_from_dict,
    to_dict,
)
from pipeline.quality.score import (
    align_words,
    anchor_cut_error_rates,
    chunk_alignment,
    cut_error_rates,
    format_alignment,
    normalize_text,
    score_texts,
    score_transcript,
    segment_error_counts,
)

ROOT = Path(__file__).resolve().parent.parent

# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The beauty’s “quote”", "the beauty is quote"),  # curly apostrophe does not split
        ('The beauty\'s "quote"', "the beauty is quote"),
        ("wait… what — really?", "wait what really"),  # no ".." word, no dash word
        ("wait... what", "wait what"),
        ("non\u00a0breaking\u2009thin\u200bspace", "non breaking thinspace"),
        ("Twenty people", "20 people"),
        ("20 people", "20 people"),
        ("twenty percent", "20%"),
        ("five dollars", "$5"),
        ("Mr. Smith", "mister smith"),
        ("colour", "color"),
        ("uh I mean, um, it", "i mean it"),
        ("[Music] Hello (laughs) there", "hello there"),
        # Sentences are normalised apart: the number normaliser must not fuse them.
        ("in twenty. Twenty people", "in 20 20 people"),
        ("", ""),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    assert normalize_text(text) == expected


def test_importing_score_does_not_import_torch() -> None:
    """Scoring starts fast: Whisper's normalizers load without whisper/__init__ (torch)."""
    code = (
        "import sys, pipeline.quality.score as s; s.normalize_text('twenty five'); "
        "print('torch' in sys.modules, 'whisper' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert done.stdout.split() == ["False", "False"]


# --- plain texts: (reference, hypothesis, expected) -----------------------------------------

WER_CASES = [
    ("the cat sat on the mat", "the cat sat on the mat", 0.0),
    ("the cat sat on the mat", "the cat sat on mat", 1 / 6),  # one deletion
    ("the cat sat", "the dog sat", 1 / 3),  # one substitution
    ("the cat sat", "the cat sat down", 1 / 3),  # one insertion
    ("the cat sat", "a dog stood up", 4 / 3),  # 3 substitutions + 1 insertion
    ("hello world", "", 1.0),
    ("Hello, World!", "hello world", 0.0),
    ("Twenty five people came.", "25 people came", 0.0),
    ("It’s Mr. Smith’s turn", "it's mister smith's turn", 0.0),
    ("uh, the colour", "the color", 0.0),
]


@pytest.mark.parametrize(("reference", "hypothesis", "expected"), WER_CASES)
def test_score_texts_wer(reference: str, hypothesis: str, expected: float) -> None:
    assert score_texts(hypothesis, reference).wer == pytest.approx(expected)


@pytest.mark.parametrize(
    ("reference", "hypothesis", "expected"),
    [
        ("the cat", "the bat", 1 / 7),  # 7 characters incl. the space, one substituted
        ("the cat", "the cat", 0.0),
        ("abc", "", 1.0),
    ],
)
def test_score_texts_cer(reference: str, hypothesis: str, expected: float) -> None:
    assert score_texts(hypothesis, reference).cer == pytest.approx(expected)


def test_score_texts_counts() -> None:
    result = score_texts("a dog stood up", "the cat sat")
    c = result.counts
    assert (c.ref_words, c.hits, c.substitutions, c.deletions, c.insertions) == (3, 0, 3, 0, 1)
    assert result.hyp_words == 4


@pytest.mark.parametrize("reference", ["", "   \n", "[Music] uh um (laughs)"])
def test_empty_reference_is_an_error(reference: str) -> None:
    with pytest.raises(ReferenceError, match="no words"):
        score_texts("some words", reference)
    with pytest.raises(ReferenceError, match="no words"):
        score_transcript(_transcript(), reference)


# --- a synthetic three-chunk episode -------------------------------------------------------
#
# Chunks tile [0, 30) at 10 s; internal cuts at 10 s and 20 s. Words are spread over their
# segment by character length: word time = start + span * (chars before + len / 2) / chars.
#
# chunk 0  A [0, 4]    "the quick crown fox"     brown -> crown (substitution), t ~ 2: far
#          B [4, 8]    "jumps over the lazy"     "dog" deleted: its time is half-way between
#                                                "lazy" (7.5) and "a" (10.15) = 8.83, chunk 0,
#                                                near the 10 s cut
# chunk 1  C [10, 14]  "a stitch in time"        a 10.15 and stitch 11.23 near; in 12.46 far
#          D [17, 19.8] "saves lives today"      "today" inserted at 19.33: near the 20 s cut;
#                                                saves 17.47 far, lives 18.4 near
# chunk 2  E [20.5, 26] "all that glitter is not gold"  glitters -> glitter at 23.0: far;
#                                                all 20.86 and that 21.70 near
REFERENCE = (
    "The quick brown fox jumps over the lazy dog.\n"
    "A stitch in time saves lives.\n"
    "All that glitters is not gold."
)
MODEL = ModelInfo(name="tiny.en", sha256="0" * 64, source="test data", path=Path("tiny.en.pt"))


def _chunk(index: int, start: float, end: float, segments: list[Segment]) -> ChunkTranscript:
    return ChunkTranscript(
        chunk_index=index,
        chunk_sha256=f"{index}" * 64,
        start_s=start,
        end_s=end,
        segments=tuple(segments),
        model=MODEL,
        options={},
        elapsed_s=0.1,
    )


def _transcript() -> Transcript:
    chunks = [
        _chunk(
            0,
            0.0,
            10.0,
            [
                Segment(0.0, 4.0, " The quick crown fox", 0),
                Segment(4.0, 8.0, " jumps over the lazy", 0),
            ],
        ),
        _chunk(
            1,
            10.0,
            20.0,
            [
                Segment(10.0, 14.0, " A stitch in time", 1),
                Segment(17.0, 19.8, " saves lives today.", 1),
            ],
        ),
        _chunk(2, 20.0, 30.0, [Segment(20.5, 26.0, " All that glitter is not gold.", 2)]),
    ]
    return Transcript(
        episode_id="synthetic",
        duration_s=30.0,
        segments=tuple(s for c in chunks for s in c.segments),
        chunks=tuple(chunks),
    )


def _tuple(counts) -> tuple[int, int, int, int, int]:
    return (
        counts.ref_words,
        counts.hits,
        counts.substitutions,
        counts.deletions,
        counts.insertions,
    )


def test_episode_counts_and_rates() -> None:
    score = score_transcript(_transcript(), REFERENCE)
    assert _tuple(score.counts) == (21, 18, 2, 1, 1)
    assert score.wer == pytest.approx(4 / 21)
    assert score.hyp_words == 21
    assert 0 < score.cer < score.wer
    assert score.normalizer == "typography+whisper.EnglishTextNormalizer"
    assert score.reference_sha256 == hashlib.sha256(REFERENCE.encode()).hexdigest()


@pytest.mark.parametrize(
    ("chunk_index", "expected"),
    [
        (0, (9, 7, 1, 1, 0)),  # brown -> crown, "dog" deleted
        (1, (6, 6, 0, 0, 1)),  # "today" inserted
        (2, (6, 5, 1, 0, 0)),  # glitters -> glitter
    ],
)
def test_per_chunk_counts(chunk_index: int, expected: tuple[int, ...]) -> None:
    score = score_transcript(_transcript(), REFERENCE)
    chunk = score.chunks[chunk_index]
    assert chunk.chunk_index == chunk_index
    assert (chunk.start_s, chunk.end_s) == (chunk_index * 10.0, chunk_index * 10.0 + 10.0)
    assert _tuple(chunk.counts) == expected


def test_chunk_counts_sum_to_episode_counts() -> None:
    score = score_transcript(_transcript(), REFERENCE)
    summed = [sum(_tuple(c.counts)[k] for c in score.chunks) for k in range(5)]
    assert tuple(summed) == _tuple(score.counts)


def test_near_cut_error_rates() -> None:
    cuts = cut_error_rates(_transcript(), REFERENCE, window_s=2.0)
    # near: dog, a, stitch, lives, all, that; errors: dog (deleted), today (inserted)
    assert (cuts.near_ref_words, cuts.near_errors) == (6, 2)
    # far: the other 15; errors: brown and glitters (substituted)
    assert (cuts.far_ref_words, cuts.far_errors) == (15, 2)
    assert cuts.near_rate == pytest.approx(2 / 6)
    assert cuts.far_rate == pytest.approx(2 / 15)
    assert score_transcript(_transcript(), REFERENCE, near_cut_s=2.0).cuts == cuts


def test_an_anchor_is_counted_at_the_pipelines_cuts() -> None:
    # Another engine's segments, cut nowhere (one long segment each sentence), scored at the
    # cuts of the synthetic transcript (10 s and 20 s): the same words near and far.
    anchor = [
        (0.0, 8.0, "The quick crown fox jumps over the lazy"),
        (10.0, 19.8, "A stitch in time saves lives today."),
        (20.5, 26.0, "All that glitter is not gold."),
    ]
    ours = cut_error_rates(_transcript(), REFERENCE, window_s=2.0)
    theirs = anchor_cut_error_rates(anchor, _transcript().chunks, REFERENCE, window_s=2.0)
    assert (theirs.near_ref_words + theirs.far_ref_words) == 21
    assert theirs.near_errors + theirs.far_errors == 4  # the same four errors
    assert theirs.window_s == ours.window_s
    # Without chunks there are no cuts: everything is far.
    alone = anchor_cut_error_rates(anchor, [], REFERENCE, window_s=2.0)
    assert (alone.near_ref_words, alone.far_ref_words, alone.far_errors) == (0, 21, 4)


def test_zero_window_puts_everything_far() -> None:
    cuts = cut_error_rates(_transcript(), REFERENCE, window_s=0.0)
    assert (cuts.near_ref_words, cuts.near_errors, cuts.near_rate) == (0, 0, None)
    assert (cuts.far_ref_words, cuts.far_errors) == (21, 4)


def test_alignment_of_one_chunk() -> None:
    alignment = align_words(_transcript(), REFERENCE)
    steps = chunk_alignment(alignment, 0)
    assert [(w.op, w.ref, w.hyp) for w in steps] == [
        ("equal", "the", "the"),
        ("equal", "quick", "quick"),
        ("substitute", "brown", "crown"),
        ("equal", "fox", "fox"),
        ("equal", "jumps", "jumps"),
        ("equal", "over", "over"),
        ("equal", "the", "the"),
        ("equal", "lazy", "lazy"),
        ("delete", "dog", None),
    ]
    assert steps[-1].time == pytest.approx((7.5 + 10 + 4 * 0.5 / 13) / 2)
    times = [w.time for w in alignment.words]
    assert times == sorted(times)
    assert format_alignment(steps) == (
        "REF: the quick BROWN fox jumps over the lazy DOG\n"
        "HYP: the quick CROWN fox jumps over the lazy ***"
    )


def test_per_segment_counts() -> None:
    t = _transcript()
    per_segment = segment_error_counts(align_words(t, REFERENCE), t)
    assert [(seg.start, _tuple(c)) for seg, c in per_segment] == [
        (0.0, (4, 3, 1, 0, 0)),  # A: brown -> crown
        (4.0, (5, 4, 0, 1, 0)),  # B: "dog" deleted at 8.83 s, nearest to B (ends 8.0)
        (10.0, (4, 4, 0, 0, 0)),  # C
        (17.0, (2, 2, 0, 0, 1)),  # D: "today" inserted
        (20.5, (6, 5, 1, 0, 0)),  # E: glitters -> glitter
    ]
    summed = [sum(_tuple(c)[k] for _, c in per_segment) for k in range(5)]
    assert tuple(summed) == (21, 18, 2, 1, 1)


def test_reference_words_dropped_at_the_start_get_times_in_the_episode() -> None:
    alignment = align_words(_transcript(), "Well well. " + REFERENCE)
    first = alignment.words[:2]
    assert [w.op for w in first] == ["delete", "delete"]
    assert 0.0 <= first[0].time <= first[1].time <= alignment.words[2].time
    assert {w.chunk_index for w in first} == {0}


def test_score_survives_json_round_trip() -> None:
    score = score_transcript(_transcript(), REFERENCE)
    assert score_from_dict(json.loads(json.dumps(to_dict(score)))) == score


def test_transcript_without_chunks_scores_overall_only() -> None:
    t = _transcript()
    bare = Transcript(episode_id="bare", duration_s=30.0, segments=t.segments, chunks=())
    score = score_transcript(bare, REFERENCE)
    assert score.chunks == ()
    assert _tuple(score.counts) == (21, 18, 2, 1, 1)
    assert score.cuts is not None and score.cuts.near_ref_words == 0
