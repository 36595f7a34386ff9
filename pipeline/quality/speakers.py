"""Who said what, scored: cpWER against a speaker-labelled reference, and naming the speakers.

cpWER (concatenated minimum-permutation WER, as CHiME-6 and meeteval define it): each speaker's
words are concatenated, on both sides; the hypothesis speakers are mapped one to one onto the
reference speakers so that the summed word errors are fewest (Hungarian assignment over the
pairwise error counts); a speaker left without a partner counts all its words, as deletions
(reference) or insertions (hypothesis). With one speaker on each side it is the WER.

Naming: a diarizer labels speakers ``SPEAKER_1…``; a reference that names them ("Host: …",
``<v Name>``, RTTM) gives the names. Each label gets the name it shares the most time (or the
most aligned words) with, one to one, and the share that agrees says how sure that is. A feed
gives names without times (``<podcast:person>``): then the transcript's own words are the
evidence, a speaker introducing themself ("I'm Alice") or being addressed by the one before
("thanks, Alice"); see :func:`name_speakers_by_mentions`.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import jiwer
import numpy as np
from scipy.optimize import linear_sum_assignment

from pipeline.core.types import (
    ErrorCounts,
    Person,
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
    "NameEvidence",
    "cpwer",
    "hypothesis_turns",
    "name_speakers_by_mentions",
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
class NameEvidence:
    """One place in the transcript that speaks for giving ``label`` the name ``name``."""

    label: str  # the diarizer's label it counts for
    name: str  # the person's full name, as the feed lists it
    kind: str  # "self" (the label introduces itself), "address" (the speaker before
    # addresses it), or "only speaker" (one person listed, one speaker found)
    said_by: str  # the label whose words these are
    text: str  # the words, cut to EVIDENCE_CHARS


@dataclass(frozen=True)
class SpeakerNaming:
    """Hypothesis labels mapped one to one onto reference names, by time or by words."""

    names: tuple[SpeakerName, ...]
    agreement: float | None  # over all labels: agreeing share of all shared time/words
    by: str  # "time" (seconds of overlap), "words" (aligned word pairs) or "feed" (mentions)
    candidates: tuple[str, ...] = ()  # by="feed": every name the feed listed, named or not
    evidence: tuple[NameEvidence, ...] = ()  # by="feed": what each count came from

    def as_dict(self) -> dict[str, str]:
        """label -> name for the labels that got one."""
        return {n.label: n.name for n in self.names if n.name is not None}

    def sure(self, min_agreement: float) -> dict[str, str]:
        """label -> name for the labels whose name is at least ``min_agreement`` sure."""
        return {
            n.label: n.name
            for n in self.names
            if n.name is not None and n.agreement is not None and n.agreement >= min_agreement
        }


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
    names = naming.sure(min_agreement)
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


# --- naming from a feed's persons: what the speakers say -------------------------------------

EVIDENCE_CHARS = 120  # of a turn's text kept as evidence: enough to check it by eye
# A label introduces itself: "I'm Alice", "I am Alice Smith", "my name is Alice", "this is
# Alice", "it's Alice", "Alice here".
_SELF_BEFORE = r"(?:i'm|i am|my name is|my name's|this is|it's)"
_SELF_AFTER = r"here\b(?!')"
# The speaker before addresses the next one: "thanks, Bob", "welcome Bob", "over to you, Bob";
# a turn that opens with "Bob," or asks ", Bob?" at its end.
_ADDRESS_BEFORE = (
    r"(?:thanks|thank you|welcome|welcome back|hi|hello|hey|good to have you|"
    r"over to you|back to you|go ahead)(?: so much| very much)?"
)


def _name_forms(persons: Sequence[Person]) -> dict[str, str]:
    """Lower-cased forms a name is said in -> the person's full name: the full name, and the
    first name where no other person shares it."""
    forms: dict[str, str] = {}
    firsts: dict[str, list[str]] = {}
    for person in persons:
        full = " ".join(person.name.split())
        forms.setdefault(full.casefold(), person.name)
        words = re.findall(r"\w[\w'-]*", full)
        if len(words) > 1:
            firsts.setdefault(words[0].casefold(), []).append(person.name)
    for first, owners in firsts.items():
        if len(set(owners)) == 1:
            forms.setdefault(first, owners[0])
    return forms


_Patterns = tuple[re.Pattern[str], ...]


def _mention_patterns(forms: Mapping[str, str]) -> tuple[_Patterns, _Patterns]:
    """(self-introduction, address) patterns over lower-cased text, the name in group "n"."""
    # Longest first: "alice smith" before "alice"; a possessive ("Alice's") is not the name.
    names = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    name = rf"(?<![\w'])(?P<n>{names})(?![\w-])(?!'s\b)"
    self_intro = (rf"\b{_SELF_BEFORE},?\s+{name}", rf"{name},?\s+{_SELF_AFTER}")
    address = (rf"\b{_ADDRESS_BEFORE},?\s+{name}", rf"^\W*{name}\s*,", rf",\s*{name}\s*\?\s*$")
    return tuple(map(re.compile, self_intro)), tuple(map(re.compile, address))


def _matches(patterns: _Patterns, text: str) -> list[re.Match[str]]:
    """Every match of any of ``patterns``; where two cover one place, the first pattern's."""
    spans: list[tuple[int, int]] = []
    found: list[re.Match[str]] = []
    for pattern in patterns:
        for match in pattern.finditer(text):
            start, end = match.span("n")
            if all(end <= s or start >= e for s, e in spans):
                spans.append((start, end))
                found.append(match)
    return found


def _plain(text: str) -> str:
    return " ".join(text.replace("\u2019", "'").replace("\u2018", "'").casefold().split())


def _mention_evidence(
    turns: Sequence[SpeakerTurn], persons: Sequence[Person]
) -> list[NameEvidence]:
    forms = _name_forms(persons)
    if not forms:
        return []
    self_intro, address = _mention_patterns(forms)
    found: list[NameEvidence] = []
    labelled = [t for t in turns if t.speaker]
    for i, turn in enumerate(labelled):
        speaker = turn.speaker or UNLABELLED
        text = _plain(turn.text)
        excerpt = " ".join(turn.text.split())[:EVIDENCE_CHARS]
        for match in _matches(self_intro, text):
            found.append(NameEvidence(speaker, forms[match["n"]], "self", speaker, excerpt))
        # The addressee answers: the next turn by someone else.
        after = next((t.speaker for t in labelled[i + 1 :] if t.speaker != speaker), None)
        if after is None:
            continue
        for match in _matches(address, text):
            found.append(NameEvidence(after, forms[match["n"]], "address", speaker, excerpt))
    return found


def name_speakers_by_mentions(
    turns: Sequence[SpeakerTurn], persons: Sequence[Person]
) -> SpeakerNaming:
    """Name the diarizer's labels after the feed's ``persons`` from what is said: a label
    introducing itself ("I'm Alice", "Alice here") counts once for that name; a name said in
    address ("thanks, Bob", "welcome Bob", "Bob, …") counts once for the next other speaker.
    Names match whole words, case ignored, as the full name or (when no one else has it) the
    first name. Labels get names one to one (most counts); agreement: the share of the
    label's counts that is for its name. A label without evidence keeps its label.

    One person listed and one speaker found: that person, with the speaker's share of the
    transcript's words (whitespace-separated, unlabelled turns included) as agreement.
    """
    candidates = tuple(dict.fromkeys(p.name for p in persons))
    labels = list(dict.fromkeys(t.speaker for t in turns if t.speaker))
    if len(candidates) == 1 and len(labels) == 1:
        words = {t.speaker: 0 for t in turns}
        for t in turns:
            words[t.speaker] += len(t.text.split())
        total = sum(words.values())
        said = words[labels[0]]
        share = said / total if total else None
        only = NameEvidence(labels[0], candidates[0], "only speaker", labels[0], "")
        name = SpeakerName(labels[0], candidates[0], share, float(said))
        return SpeakerNaming((name,), share, "feed", candidates, (only,))
    evidence = _mention_evidence(turns, persons)
    shared: dict[str, dict[str, float]] = {}
    for e in evidence:
        row = shared.setdefault(e.label, {})
        row[e.name] = row.get(e.name, 0.0) + 1
    naming = _name_from_shared(shared, labels, "feed")
    return dataclasses.replace(naming, candidates=candidates, evidence=tuple(evidence))
