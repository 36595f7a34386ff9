"""Who said what, scored: cpWER against a speaker-labelled reference, and naming the speakers.

cpWER (concatenated minimum-permutation WER, as CHiME-6 and meeteval define it): each speaker's
words are concatenated, on both sides; the hypothesis speakers are mapped one to one onto the
reference speakers so that the summed word errors are fewest (Hungarian assignment over the
pairwise error counts); a speaker left without a partner counts all its words, as deletions
(reference) or insertions (hypothesis). With one speaker on each side it is the WER.

Naming: a diarizer labels speakers ``SPEAKER_1…``; a reference that names them ("Host: …",
``<v Name>``, RTTM) gives the names. Each label gets the name it shares the most time (or the
most aligned words) with, one to one, and the share that agrees says how sure that is.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.core.types import (
    ErrorCounts,
    Score,
    SpeakerScore,
    SpeakerSpan,
    SpeakerTurn,
    Transcript,
)
from pipeline.quality.der import DEFAULT_COLLAR_S, diarization_error, overlap_pieces
from pipeline.quality.score import normalize_words

__all__ = [
    "UNLABELLED",
    "add_speaker_scores",
    "SpeakerName",
    "SpeakerNaming",
    "cpwer",
    "hypothesis_turns",
    "name_speakers_by_time",
    "name_speakers_by_words",
    "pair_counts",
    "words_by_speaker",
    "rename_speakers",
    "speaker_spans",
]

# The speaker of text that no label covers (reference lines before the first label, segments
# the diarizer left unlabelled): one more speaker, so its words are still counted.
UNLABELLED = "(unlabelled)"


def hypothesis_turns(transcript: Transcript) -> tuple[SpeakerTurn, ...]:
    """The transcript's segments as speaker turns; () where no segment has a speaker."""
    if all(s.speaker is None for s in transcript.segments):
        return ()
    return tuple(SpeakerTurn(s.speaker, s.text) for s in transcript.segments if s.text.strip())


def speaker_spans(transcript: Transcript) -> tuple[SpeakerSpan, ...]:
    """Who speaks when, from the transcript's segments; () where no segment has a speaker."""
    if all(s.speaker is None for s in transcript.segments):
        return ()
    return tuple(
        SpeakerSpan(s.speaker or UNLABELLED, s.start, s.end)
        for s in transcript.segments
        if s.end > s.start
    )


def _words_by_speaker(turns: Iterable[SpeakerTurn]) -> dict[str, list[str]]:
    words: dict[str, list[str]] = {}
    for turn in turns:
        words.setdefault(turn.speaker or UNLABELLED, []).extend(normalize_words(turn.text))
    return words


def _pair_counts(ref: Sequence[str], hyp: Sequence[str]) -> ErrorCounts:
    """Errors of one hypothesis speaker's words against one reference speaker's."""
    if not ref or not hyp:  # jiwer refuses an empty reference; either way it is all D or all I
        return ErrorCounts(len(ref), 0, 0, len(ref), len(hyp))
    out = jiwer.process_words(" ".join(ref), " ".join(hyp))
    return ErrorCounts(len(ref), out.hits, out.substitutions, out.deletions, out.insertions)


def _add(a: ErrorCounts, b: ErrorCounts) -> ErrorCounts:
    return ErrorCounts(
        a.ref_words + b.ref_words,
        a.hits + b.hits,
        a.substitutions + b.substitutions,
        a.deletions + b.deletions,
        a.insertions + b.insertions,
    )


def cpwer(reference: Sequence[SpeakerTurn], hypothesis: Sequence[SpeakerTurn]) -> SpeakerScore:
    """cpWER of ``hypothesis`` turns against ``reference`` turns (see the module docstring).

    Both sides go through the same normalisation as the WER, turn by turn.
    """
    ref = _words_by_speaker(reference)
    hyp = _words_by_speaker(hypothesis)
    ref_names, hyp_names = list(ref), list(hyp)
    # Square, padded with empty speakers: a real speaker paired with an empty one is the
    # "unmatched" case (all its words are errors). Pairing two real speakers never costs more
    # than leaving both unmatched (edit distance <= len(ref) + len(hyp)), so padding to the
    # larger side is enough.
    n = max(len(ref_names), len(hyp_names))
    pairs: dict[tuple[int, int], ErrorCounts] = {}
    cost = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            r = ref[ref_names[i]] if i < len(ref_names) else []
            h = hyp[hyp_names[j]] if j < len(hyp_names) else []
            pairs[i, j] = _pair_counts(r, h)
            cost[i, j] = pairs[i, j].errors
    rows, cols = linear_sum_assignment(cost)
    total = ErrorCounts(0, 0, 0, 0, 0)
    mapping: list[tuple[str, str | None]] = []
    for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
        total = _add(total, pairs[i, j])
        if i < len(ref_names):
            mapping.append((ref_names[i], hyp_names[j] if j < len(hyp_names) else None))
    return SpeakerScore(
        cpwer=total.wer,
        counts=total,
        ref_speakers=len(ref_names),
        hyp_speakers=len(hyp_names),
        mapping=tuple(mapping),
    )


def words_by_speaker(turns: Iterable[SpeakerTurn]) -> dict[str, list[str]]:
    """Each speaker's normalised words, concatenated in order (cpWER's view of the turns)."""
    return _words_by_speaker(turns)


def pair_counts(ref: Sequence[str], hyp: Sequence[str]) -> ErrorCounts:
    """The errors of one reference speaker's words against one hypothesis speaker's: one term
    of cpWER's sum."""
    return _pair_counts(ref, hyp)


def add_speaker_scores(
    score: Score,
    transcript: Transcript,
    reference_turns: Sequence[SpeakerTurn] = (),
    rttm: Sequence[SpeakerSpan] | None = None,
    collar_s: float = DEFAULT_COLLAR_S,
    turns: Sequence[SpeakerSpan] | None = None,
) -> Score:
    """``score`` with cpWER (labelled reference and diarized transcript) and DER (an RTTM and a
    diarized transcript) added where they apply; the WER is untouched.

    DER is of ``turns`` where given (the diarizer's own, named as the transcript names them):
    segments run over the pauses between sentences, which would count as false alarm."""
    hyp_turns = hypothesis_turns(transcript)
    speakers = cpwer(reference_turns, hyp_turns) if reference_turns and hyp_turns else None
    spans = tuple(turns) if turns else speaker_spans(transcript)
    der = diarization_error(rttm, spans, collar_s) if rttm and spans else None
    return dataclasses.replace(score, speakers=speakers, diarization=der)


# --- naming ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SpeakerName:
    """The name given to one hypothesis speaker label, and how sure it is."""

    label: str  # the diarizer's label, e.g. "SPEAKER_1"
    name: str | None  # the reference speaker it maps to; None: no reference speaker left
    agreement: float | None  # share of the label's shared time/words that is with ``name``
    shared: float  # seconds (or words) the label shares with any reference speaker


@dataclass(frozen=True)
class SpeakerNaming:
    """Hypothesis labels mapped one to one onto reference names, by time or by words."""

    names: tuple[SpeakerName, ...]
    agreement: float | None  # over all labels: agreeing share of all shared time/words
    by: str  # "time" (seconds of overlap) or "words" (aligned word pairs)

    def as_dict(self) -> dict[str, str]:
        """label -> name for the labels that got one."""
        return {n.label: n.name for n in self.names if n.name is not None}


def _name_from_shared(
    shared: Mapping[str, Mapping[str, float]], labels: Sequence[str], by: str
) -> SpeakerNaming:
    """One-to-one naming that maximises the shared amount (Hungarian assignment)."""
    ref_names = sorted({r for row in shared.values() for r in row})
    matrix = np.array([[shared.get(h, {}).get(r, 0.0) for r in ref_names] for h in labels])
    chosen: dict[str, str] = {}
    if matrix.size:
        rows, cols = linear_sum_assignment(matrix, maximize=True)
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            if matrix[i, j] > 0:  # sharing nothing is no evidence for a name
                chosen[labels[i]] = ref_names[j]
    names: list[SpeakerName] = []
    agreed = total = 0.0
    for h in labels:
        row = shared.get(h, {})
        h_total = sum(row.values())
        name = chosen.get(h)
        h_agreed = row.get(name, 0.0) if name else 0.0
        agreed, total = agreed + h_agreed, total + h_total
        names.append(SpeakerName(h, name, h_agreed / h_total if h_total else None, h_total))
    return SpeakerNaming(tuple(names), agreed / total if total else None, by)


def name_speakers_by_time(
    hypothesis: Sequence[SpeakerSpan], reference: Sequence[SpeakerSpan]
) -> SpeakerNaming:
    """Name each hypothesis speaker after the reference speaker it overlaps most in time."""
    shared: dict[str, dict[str, float]] = {}
    for d, ref, hyp in overlap_pieces(reference, hypothesis):
        for h in hyp:
            row = shared.setdefault(h, {})
            for r in ref:
                row[r] = row.get(r, 0.0) + d
    labels = list(dict.fromkeys(h.speaker for h in hypothesis))
    return _name_from_shared(shared, labels, "time")


def _speaker_words(turns: Sequence[SpeakerTurn]) -> tuple[list[str], list[str]]:
    words: list[str] = []
    speakers: list[str] = []
    for turn in turns:
        w = normalize_words(turn.text)
        words.extend(w)
        speakers.extend([turn.speaker or UNLABELLED] * len(w))
    return words, speakers


def name_speakers_by_words(
    hypothesis: Sequence[SpeakerTurn], reference: Sequence[SpeakerTurn]
) -> SpeakerNaming:
    """Name hypothesis speakers from a reference without times: align the words of both (in
    order, speakers ignored) and count, for each label, the reference words its words align to
    (hits and substitutions) by reference speaker."""
    ref_words, ref_speakers = _speaker_words(reference)
    hyp_words, hyp_speakers = _speaker_words(hypothesis)
    shared: dict[str, dict[str, float]] = {}
    if ref_words and hyp_words:
        out = jiwer.process_words(" ".join(ref_words), " ".join(hyp_words))
        for step in out.alignments[0]:
            if step.type not in ("equal", "substitute"):
                continue
            for k in range(step.ref_end_idx - step.ref_start_idx):
                h = hyp_speakers[step.hyp_start_idx + k]
                r = ref_speakers[step.ref_start_idx + k]
                row = shared.setdefault(h, {})
                row[r] = row.get(r, 0.0) + 1
    labels = list(dict.fromkeys(hyp_speakers))
    return _name_from_shared(shared, labels, "words")


def rename_speakers(
    transcript: Transcript, naming: SpeakerNaming, min_agreement: float = 0.5
) -> Transcript:
    """``transcript`` with each label replaced by its name where the naming is at least
    ``min_agreement`` sure of it; other labels stay as they are (``SPEAKER_3``)."""
    names = {
        n.label: n.name
        for n in naming.names
        if n.name is not None and n.agreement is not None and n.agreement >= min_agreement
    }
    segments = tuple(
        dataclasses.replace(
            s,
            speaker=names.get(s.speaker, s.speaker),
            words=None
            if s.words is None
            else tuple(
                dataclasses.replace(w, speaker=names.get(w.speaker, w.speaker)) if w.speaker else w
                for w in s.words
            ),
        )
        if s.speaker
        else s
        for s in transcript.segments
    )
    return dataclasses.replace(transcript, segments=segments)
