"""Score a transcript against a reference: one whole-episode alignment, errors placed in time.

Both sides go through the same normalisation (:func:`normalize_text`): typography first, then
Whisper's ``EnglishTextNormalizer``. The episode is aligned once with jiwer; every reference word
then gets a time (from the hypothesis word it aligned to, or interpolated when the transcript
dropped it), so errors can be attributed to chunks and to the neighbourhood of chunk cuts
without re-aligning pieces (which would miscount words near the cuts).

Importing this module must stay fast: it loads Whisper's normalizers from their files without
running ``whisper/__init__`` (which imports torch).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import importlib.util
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import jiwer

from pipeline.core.errors import OptionsError, ReferenceError
from pipeline.core.types import (
    ChunkScore,
    ChunkTranscript,
    CutErrorRates,
    ErrorCounts,
    Score,
    Segment,
    SpeakerScore,
    Transcript,
)

__all__ = [
    "AlignedWord",
    "CutErrorRates",
    "TextScore",
    "WordAlignment",
    "align_words",
    "anchor_cut_error_rates",
    "chunk_alignment",
    "cut_error_rates",
    "format_alignment",
    "near_cut_error_rates",
    "normalize_text",
    "normalize_typography",
    "normalize_words",
    "score_texts",
    "score_transcript",
    "segment_error_counts",
]

NORMALIZER_NAME = "typography+whisper.EnglishTextNormalizer"
DEFAULT_NEAR_CUT_S = 2.0  # seconds either side of an internal chunk boundary that count as "near"

# A private module name: the normalizers' relative imports resolve under it, and it cannot
# collide with a real ``whisper`` import elsewhere in the same process.
_NORMALIZERS_MODULE = "_podscribe_whisper_normalizers"

# Publisher references and Whisper output differ in typography only; map it to what
# EnglishTextNormalizer understands. Apostrophes matter most: it expands "beauty's" but would
# split "beauty’s" into two words.
_TYPOGRAPHY = str.maketrans(
    {
        "\u2019": "'",  # right single quote, the usual typographic apostrophe
        "\u2018": "'",
        "\u201b": "'",
        "\u02bc": "'",  # modifier letter apostrophe
        "\u2032": "'",  # prime
        "\uff07": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u201f": '"',
        "\u2033": '"',
        "\u00ab": '"',
        "\u00bb": '"',
        "\u2010": "-",  # hyphen
        "\u2011": "-",  # non-breaking hyphen
        "\u2012": " ",  # figure dash
        "\u2013": " ",  # en dash: ranges and asides, never inside a word
        "\u2014": " ",  # em dash
        "\u2015": " ",
        "\u2212": "-",  # minus sign
        "\u2026": " ",  # ellipsis: left alone it becomes a ".." word
        "\u00a0": " ",  # no-break space
        "\u2007": " ",
        "\u2009": " ",
        "\u202f": " ",
        "\u3000": " ",
        "\u200b": None,  # zero-width space
        "\u200c": None,
        "\u200d": None,
        "\u2060": None,
        "\ufeff": None,  # stray BOM
        "\u00ad": None,  # soft hyphen: invisible, splits words if kept
    }
)
_ELLIPSIS = re.compile(r"\.{2,}")  # ASCII "..." the same way as the typographic one
# Normalising sentence by sentence keeps the number normaliser from merging numbers across a
# sentence end ("in twenty. Twenty people" is not "2020 people"), on both sides alike.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


# --- normalisation -------------------------------------------------------------------------


def _load_whisper_normalizers() -> ModuleType:
    """Import ``whisper.normalizers`` from its files, without ``whisper/__init__`` (torch)."""
    if _NORMALIZERS_MODULE in sys.modules:
        return sys.modules[_NORMALIZERS_MODULE]
    spec = importlib.util.find_spec("whisper")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("openai-whisper is not installed: it provides the text normalizer")
    folder = Path(next(iter(spec.submodule_search_locations))) / "normalizers"
    sub_spec = importlib.util.spec_from_file_location(
        _NORMALIZERS_MODULE, folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    if sub_spec is None or sub_spec.loader is None:
        raise ImportError(f"cannot load Whisper's normalizers from {folder}")
    module = importlib.util.module_from_spec(sub_spec)
    sys.modules[_NORMALIZERS_MODULE] = module  # before exec: its relative imports look it up
    try:
        sub_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[_NORMALIZERS_MODULE]
        raise
    return module


@functools.cache
def _english_normalizer() -> Callable[[str], str]:
    # Built once: its constructor reads english.json and compiles many patterns.
    return _load_whisper_normalizers().EnglishTextNormalizer()


def normalize_typography(text: str) -> str:
    """Map curly quotes, dashes, ellipses and odd spaces to plain ASCII equivalents."""
    return _ELLIPSIS.sub(" ", text.translate(_TYPOGRAPHY))


def normalize_words(text: str) -> list[str]:
    """The normalised words of ``text``: typography, then Whisper's English normaliser,
    sentence by sentence, repeated until the words stop changing (see ``_MAX_PASSES``)."""
    words = _normalize_once(text)
    for _ in range(_MAX_PASSES):
        again = _normalize_once(" ".join(words))
        if again == words:
            break
        words = again
    return words


# One pass of Whisper's normaliser can leave work for the next ("twenty 1" → "20 one" → "21";
# "0", "1" as two sentences → "0 one" → "one"); a normalised text must normalise to itself, or
# a transcript re-scored from its own output would score differently. Two passes settle
# everything seen so far (tests/test_properties.py); a few more cost nothing.
_MAX_PASSES = 4


def _normalize_once(text: str) -> list[str]:
    english = _english_normalizer()
    words: list[str] = []
    for sentence in _SENTENCE_END.split(normalize_typography(text)):
        if sentence.strip():
            words.extend(english(sentence).split())
    return words


def normalize_text(text: str) -> str:
    """Normalise ``text`` the way both sides of every score are (one space between words)."""
    return " ".join(normalize_words(text))


# --- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlignedWord:
    """One step of the episode alignment, placed in episode time."""

    op: str  # "equal", "substitute", "delete" (reference word missing) or "insert" (extra word)
    ref: str | None  # normalised reference word; None for an insertion
    hyp: str | None  # normalised hypothesis word; None for a deletion
    time: float  # episode seconds: the hypothesis word's time, interpolated for deletions
    chunk_index: int  # chunk the step is counted on; -1 when the transcript has no chunks


@dataclass(frozen=True)
class WordAlignment:
    """The whole-episode alignment of normalised reference and hypothesis words."""

    words: tuple[AlignedWord, ...]
    ref_words: tuple[str, ...]
    hyp_words: tuple[str, ...]
    normalizer: str = NORMALIZER_NAME


@dataclass(frozen=True)
class TextScore:
    """Score of a plain hypothesis text against a plain reference text."""

    wer: float
    cer: float
    mer: float
    wil: float
    counts: ErrorCounts
    hyp_words: int
    normalizer: str = NORMALIZER_NAME
    speakers: SpeakerScore | None = None  # cpWER, where both texts name speakers


# --- word times ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _HypWord:
    word: str
    time: float
    chunk_index: int


def _chunk_finder(chunks: Sequence[ChunkTranscript]) -> Callable[[float], int]:
    """A function mapping an episode time to the index of the chunk that holds it."""
    ordered = sorted(chunks, key=lambda c: c.start_s)
    starts = [c.start_s for c in ordered]

    def find(time: float) -> int:
        if not ordered:
            return -1
        # Chunks tile the episode as [start, end): a time on a boundary belongs to the later
        # chunk; times before the first or after the last chunk clamp to it.
        pos = bisect.bisect_right(starts, time) - 1
        return ordered[max(pos, 0)].chunk_index

    return find


def _hypothesis_words(transcript: Transcript) -> list[_HypWord]:
    """Normalise each segment on its own so every word keeps its segment's chunk and time."""
    chunk_bounds = {c.chunk_index: (c.start_s, c.end_s) for c in transcript.chunks}
    find_chunk = _chunk_finder(transcript.chunks)
    words: list[_HypWord] = []
    for seg in transcript.segments:
        seg_words = normalize_words(seg.text)
        if not seg_words:
            continue
        # Spread words over the segment by character length: long words take longer to say.
        total = sum(len(w) for w in seg_words)
        span = max(seg.end - seg.start, 0.0)
        before = 0
        chunk_index = seg.chunk_index if seg.chunk_index in chunk_bounds else None
        for w in seg_words:
            time = seg.start + span * (before + len(w) / 2) / total
            before += len(w)
            if chunk_index is None:
                index = find_chunk(time)
            else:
                index = chunk_index
                lo, hi = chunk_bounds[index]
                # Whisper may stamp a segment slightly past its chunk's end; keep the time
                # inside the chunk so "by time" and "by chunk" never disagree.
                time = min(max(time, lo), hi)
            words.append(_HypWord(w, time, index))
    return words


def _episode_end(transcript: Transcript) -> float:
    ends = [transcript.duration_s, *(c.end_s for c in transcript.chunks)]
    ends += [s.end for s in transcript.segments]
    return max(ends)


def _interpolate_deletions(times: list[float | None], end_s: float) -> list[float]:
    """Give each deleted reference word (time None) a time between its aligned neighbours."""
    filled: list[float] = []
    i = 0
    while i < len(times):
        t = times[i]
        if t is not None:
            filled.append(t)
            i += 1
            continue
        j = i
        while j < len(times) and times[j] is None:
            j += 1
        left = filled[-1] if filled else 0.0
        right = times[j] if j < len(times) else end_s
        right = left if right is None else max(right, left)
        run = j - i
        filled.extend(left + (right - left) * (k + 1) / (run + 1) for k in range(run))
        i = j
    return [min(max(t, 0.0), end_s) for t in filled]


# --- alignment ---------------------------------------------------------------------------------


def _reference_words(reference_text: str) -> list[str]:
    words = normalize_words(reference_text)
    if not words:
        raise ReferenceError(
            "reference has no words after normalisation (it is empty, or only holds "
            "bracketed notes or fillers): check the reference file"
        )
    return words


def _process(ref_words: Sequence[str], hyp_words: Sequence[str]) -> jiwer.WordOutput:
    # One sentence each side: jiwer splits on spaces, and normalised words never hold one.
    return jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))


def _align(transcript: Transcript, ref_words: list[str]) -> tuple[WordAlignment, jiwer.WordOutput]:
    hyp = _hypothesis_words(transcript)
    output = _process(ref_words, [h.word for h in hyp])
    find_chunk = _chunk_finder(transcript.chunks)

    # First pass: the time of every reference word that aligned to a hypothesis word.
    ref_times: list[float | None] = [None] * len(ref_words)
    ref_chunks: list[int | None] = [None] * len(ref_words)
    for step in output.alignments[0]:
        if step.type in ("equal", "substitute"):
            for k in range(step.ref_end_idx - step.ref_start_idx):
                h = hyp[step.hyp_start_idx + k]
                ref_times[step.ref_start_idx + k] = h.time
                ref_chunks[step.ref_start_idx + k] = h.chunk_index
    times = _interpolate_deletions(ref_times, _episode_end(transcript))

    steps: list[AlignedWord] = []
    for step in output.alignments[0]:
        if step.type == "insert":
            for h in hyp[step.hyp_start_idx : step.hyp_end_idx]:
                steps.append(AlignedWord("insert", None, h.word, h.time, h.chunk_index))
            continue
        for k in range(step.ref_end_idx - step.ref_start_idx):
            r = step.ref_start_idx + k
            hyp_word = None if step.type == "delete" else hyp[step.hyp_start_idx + k].word
            chunk = ref_chunks[r]
            steps.append(
                AlignedWord(
                    op=step.type,
                    ref=ref_words[r],
                    hyp=hyp_word,
                    time=times[r],
                    chunk_index=find_chunk(times[r]) if chunk is None else chunk,
                )
            )
    alignment = WordAlignment(
        words=tuple(steps),
        ref_words=tuple(ref_words),
        hyp_words=tuple(h.word for h in hyp),
    )
    return alignment, output


def align_words(transcript: Transcript, reference_text: str) -> WordAlignment:
    """Align the whole episode's normalised words to the reference, each step placed in time.

    Raises ReferenceError if the reference normalises to no words.
    """
    return _align(transcript, _reference_words(reference_text))[0]


def chunk_alignment(alignment: WordAlignment, chunk_index: int) -> tuple[AlignedWord, ...]:
    """The alignment steps counted on one chunk, in episode order."""
    return tuple(w for w in alignment.words if w.chunk_index == chunk_index)


def format_alignment(words: Sequence[AlignedWord]) -> str:
    """Reference and hypothesis lines, column-aligned, errors in capitals (``*`` for gaps)."""
    ref_cols: list[str] = []
    hyp_cols: list[str] = []
    for w in words:
        ref = w.ref or "*" * len(w.hyp or "")
        hyp = w.hyp or "*" * len(w.ref or "")
        if w.op != "equal":
            ref, hyp = ref.upper(), hyp.upper()
        width = max(len(ref), len(hyp))
        ref_cols.append(ref.ljust(width))
        hyp_cols.append(hyp.ljust(width))
    return f"REF: {' '.join(ref_cols).rstrip()}\nHYP: {' '.join(hyp_cols).rstrip()}"


# --- counting ----------------------------------------------------------------------------------


def _counts(words: Sequence[AlignedWord]) -> ErrorCounts:
    ops = [w.op for w in words]
    hits, subs, dels = ops.count("equal"), ops.count("substitute"), ops.count("delete")
    return ErrorCounts(
        ref_words=hits + subs + dels,
        hits=hits,
        substitutions=subs,
        deletions=dels,
        insertions=ops.count("insert"),
    )


def _rate(errors: int, words: int) -> float | None:
    return errors / words if words else None


def segment_error_counts(
    alignment: WordAlignment, transcript: Transcript
) -> list[tuple[Segment, ErrorCounts]]:
    """Error counts per segment, from the same whole-episode alignment as the chunk counts.

    Each step goes to the segment of its chunk whose time span holds it (hypothesis words lie
    inside their segment by construction); a deleted reference word between two segments goes
    to the nearer one, the earlier on a tie. Steps of a chunk without segments are not counted.
    """
    by_chunk: dict[int, list[int]] = {}
    for k, seg in enumerate(transcript.segments):
        by_chunk.setdefault(seg.chunk_index, []).append(k)
    steps: list[list[AlignedWord]] = [[] for _ in transcript.segments]
    for w in alignment.words:
        candidates = by_chunk.get(w.chunk_index) or []
        if not candidates:
            continue

        def distance(k: int, time: float = w.time) -> float:
            seg = transcript.segments[k]
            return max(seg.start - time, time - seg.end, 0.0)

        steps[min(candidates, key=lambda k: (distance(k), k))].append(w)
    return [(seg, _counts(s)) for seg, s in zip(transcript.segments, steps, strict=True)]


def near_cut_error_rates(
    alignment: WordAlignment, chunks: Sequence[ChunkTranscript], window_s: float
) -> CutErrorRates:
    """Split errors of an alignment into near (±window_s of an internal cut) and far zones."""
    if window_s < 0:
        raise OptionsError(f"near-cut window must be >= 0 seconds, got {window_s}")
    ordered = sorted(chunks, key=lambda c: c.start_s)
    # Internal boundaries only: the episode's own start and end are not cuts.
    cuts = [c.end_s for c in ordered[:-1]]

    def near(time: float) -> bool:
        return any(abs(time - cut) <= window_s for cut in cuts)

    counts = {True: [0, 0], False: [0, 0]}  # near? -> [reference words, errors]
    for w in alignment.words:
        zone = counts[near(w.time)]
        if w.op != "insert":
            zone[0] += 1
        if w.op != "equal":
            zone[1] += 1
    (near_words, near_errors), (far_words, far_errors) = counts[True], counts[False]
    return CutErrorRates(
        near_ref_words=near_words,
        near_errors=near_errors,
        far_ref_words=far_words,
        far_errors=far_errors,
        near_rate=_rate(near_errors, near_words),
        far_rate=_rate(far_errors, far_words),
        window_s=window_s,
    )


def cut_error_rates(
    transcript: Transcript, reference_text: str, window_s: float = DEFAULT_NEAR_CUT_S
) -> CutErrorRates:
    """Error rate near internal chunk cuts versus elsewhere (see :class:`CutErrorRates`)."""
    return near_cut_error_rates(
        align_words(transcript, reference_text), transcript.chunks, window_s
    )


def anchor_cut_error_rates(
    segments: Sequence[tuple[float, float, str]],
    chunks: Sequence[ChunkTranscript],
    reference_text: str,
    window_s: float = DEFAULT_NEAR_CUT_S,
) -> CutErrorRates:
    """Near/far-cut error rates of another engine's segments (start, end, text in episode
    seconds) counted against *these* chunks' cuts: the same places in the audio.

    Cut positions sit in pauses, which are often where the audio itself is hardest, so a
    pipeline's near-cut rate means something only beside an anchor's at the same positions.
    """
    anchor = Transcript(
        episode_id="anchor",
        duration_s=max([c.end_s for c in chunks] + [e for _s, e, _t in segments] + [0.0]),
        # chunk_index -1: each word is given the chunk that holds its time
        segments=tuple(Segment(start=s, end=e, text=t, chunk_index=-1) for s, e, t in segments),
        chunks=tuple(chunks),
    )
    return cut_error_rates(anchor, reference_text, window_s)


def _overall_counts(output: jiwer.WordOutput, ref_words: int) -> ErrorCounts:
    return ErrorCounts(
        ref_words=ref_words,
        hits=output.hits,
        substitutions=output.substitutions,
        deletions=output.deletions,
        insertions=output.insertions,
    )


def _cer(ref_words: Sequence[str], hyp_words: Sequence[str]) -> float:
    return float(jiwer.cer(" ".join(ref_words), " ".join(hyp_words)))


def score_transcript(
    transcript: Transcript, reference_text: str, near_cut_s: float = DEFAULT_NEAR_CUT_S
) -> Score:
    """Score an episode transcript against its reference, overall, per chunk and near cuts.

    Per-chunk counts come from the one whole-episode alignment (reference words counted on the
    chunk holding their time, insertions on the chunk of the inserted word), so they sum
    exactly to the episode counts. Raises ReferenceError if the reference has no words.
    """
    ref_words = _reference_words(reference_text)
    alignment, output = _align(transcript, ref_words)
    chunk_scores = tuple(
        ChunkScore(
            chunk_index=c.chunk_index,
            start_s=c.start_s,
            end_s=c.end_s,
            counts=_counts(chunk_alignment(alignment, c.chunk_index)),
        )
        for c in transcript.chunks
    )
    return Score(
        wer=float(output.wer),
        cer=_cer(ref_words, alignment.hyp_words),
        mer=float(output.mer),
        wil=float(output.wil),
        counts=_overall_counts(output, len(ref_words)),
        hyp_words=len(alignment.hyp_words),
        chunks=chunk_scores,
        normalizer=NORMALIZER_NAME,
        reference_sha256=hashlib.sha256(reference_text.encode("utf-8")).hexdigest(),
        cuts=near_cut_error_rates(alignment, transcript.chunks, near_cut_s),
    )


def score_texts(hypothesis: str, reference: str) -> TextScore:
    """Score a plain hypothesis text against a plain reference text (same normalisation).

    Raises ReferenceError if the reference has no words.
    """
    ref_words = _reference_words(reference)
    hyp_words = normalize_words(hypothesis)
    output = _process(ref_words, hyp_words)
    return TextScore(
        wer=float(output.wer),
        cer=_cer(ref_words, hyp_words),
        mer=float(output.mer),
        wil=float(output.wil),
        counts=_overall_counts(output, len(ref_words)),
        hyp_words=len(hyp_words),
    )
