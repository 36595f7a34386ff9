"""Who said what, for the report: WER per reference speaker, the turns whose speaker label is
wrong, and a speaker timeline (inline SVG: the page stays one file with no network).

Everything comes from the episode alignment (``score.align_words``: one alignment of the whole
episode, speakers ignored) and the reference's speaker turns:

- each reference word belongs to the turn it is in, so each alignment step has a reference
  speaker (an insertion takes the speaker of the reference word before it); a speaker's WER is
  its steps' errors over its reference words: which words of whose speech were got wrong,
  whatever the diarizer did;
- where the transcript has speaker labels, each label stands for the reference speaker that
  cpWER's best permutation pairs it with (``speakers.cpwer``), and that pair's cpWER is shown
  beside the WER; a segment whose aligned reference words belong mostly to another speaker
  than its label's has the wrong label, and runs of such segments are the wrong turns;
- the timeline draws the reference turns where their aligned words fall in time, and the
  transcript's segments by label, coloured by the reference speaker each label stands for.
"""

from __future__ import annotations

import html
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import jiwer

from pipeline.core.types import ErrorCounts, SpeakerScore, SpeakerTurn, Transcript
from pipeline.quality.score import WordAlignment, normalize_words
from pipeline.quality.speakers import (
    UNLABELLED,
    cpwer,
    hypothesis_turns,
    pair_counts,
    words_by_speaker,
)

# One colour per reference speaker, in order of first appearance (then cycled).
PALETTE = (
    "#4c78a8",
    "#f58518",
    "#54a24b",
    "#b279a2",
    "#e45756",
    "#72b7b2",
    "#eeca3b",
    "#9d755d",
    "#bab0ac",
    "#ff9da6",
)
UNMATCHED_COLOUR = "#999999"
WRONG_COLOUR = "#d62728"


@dataclass(frozen=True)
class SpeakerWer:
    """One reference speaker's words scored."""

    speaker: str
    counts: ErrorCounts  # from the episode alignment
    label: str | None  # the transcript label cpWER pairs with this speaker; None: none
    pair: ErrorCounts | None  # cpWER of this speaker's words against that label's

    @property
    def wer(self) -> float | None:
        return self.counts.wer


@dataclass(frozen=True)
class WrongTurn:
    """Consecutive transcript segments labelled as one speaker while another is talking."""

    start: float
    end: float
    label: str  # the transcript's label
    labelled_as: str | None  # the reference speaker that label stands for
    speaker: str  # who the reference says is talking
    text: str


@dataclass(frozen=True)
class Span:
    """A stretch of one lane of the timeline."""

    lane: str
    start: float
    end: float
    speaker: str | None  # the reference speaker it stands for (colours it); None: none
    wrong: bool = False


@dataclass(frozen=True)
class SpeakerReport:
    """The speaker section of a report."""

    speakers: tuple[SpeakerWer, ...]
    wrong_turns: tuple[WrongTurn, ...]
    reference_spans: tuple[Span, ...]
    hypothesis_spans: tuple[Span, ...]
    label_names: tuple[tuple[str, str | None], ...]  # transcript label -> reference speaker
    segments_labelled: int  # transcript segments with aligned reference words and a label
    segments_wrong: int

    def as_dict(self) -> dict[str, object]:
        """The JSON form (score.json's ``per_speaker``)."""
        return {
            "speakers": [
                {
                    "speaker": s.speaker,
                    "ref_words": s.counts.ref_words,
                    "wer": s.wer,
                    "substitutions": s.counts.substitutions,
                    "deletions": s.counts.deletions,
                    "insertions": s.counts.insertions,
                    "label": s.label,
                    "pair_cpwer": s.pair.wer if s.pair else None,
                }
                for s in self.speakers
            ],
            "labels": dict(self.label_names),
            "segments_labelled": self.segments_labelled,
            "segments_wrong": self.segments_wrong,
            "wrong_turns": [
                {
                    "start": t.start,
                    "end": t.end,
                    "label": t.label,
                    "labelled_as": t.labelled_as,
                    "speaker": t.speaker,
                    "text": t.text,
                }
                for t in self.wrong_turns
            ],
        }


def _reference_speakers(
    turns: Sequence[SpeakerTurn], turn_words: Sequence[Sequence[str]], ref_words: Sequence[str]
) -> list[str]:
    """The speaker of each of the alignment's reference words (``turn_words``: each turn's
    normalised words)."""
    words: list[str] = []
    speakers: list[str] = []
    for turn, w in zip(turns, turn_words, strict=True):
        words += w
        speakers += [turn.speaker or UNLABELLED] * len(w)
    if words == list(ref_words):
        return speakers
    # Normalising turn by turn gave other words than the whole text did (rare: a number split
    # over two lines): carry the labels over by aligning the two word lists.
    out: list[str | None] = [None] * len(ref_words)
    if words and ref_words:
        steps = jiwer.process_words(" ".join(words), " ".join(ref_words)).alignments[0]
        for step in steps:
            if step.type in ("equal", "substitute"):
                for k in range(step.ref_end_idx - step.ref_start_idx):
                    out[step.hyp_start_idx + k] = speakers[step.ref_start_idx + k]
    last = speakers[0] if speakers else UNLABELLED
    filled = []
    for s in out:
        last = s if s is not None else last
        filled.append(last)
    return filled


def _segment_of_hyp_word(transcript: Transcript) -> list[int]:
    """For each hypothesis word of the alignment, the index of its transcript segment."""
    out: list[int] = []
    for k, seg in enumerate(transcript.segments):
        out += [k] * len(normalize_words(seg.text))
    return out


def _add(c: ErrorCounts, op: str) -> ErrorCounts:
    return ErrorCounts(
        c.ref_words + (op != "insert"),
        c.hits + (op == "equal"),
        c.substitutions + (op == "substitute"),
        c.deletions + (op == "delete"),
        c.insertions + (op == "insert"),
    )


def speaker_report(
    transcript: Transcript,
    alignment: WordAlignment,
    reference_turns: Sequence[SpeakerTurn],
    cpwer_score: SpeakerScore | None = None,
) -> SpeakerReport | None:
    """The speaker section, or None where neither the reference nor the transcript names
    speakers (a transcript's labels alone give the timeline). ``cpwer_score``: the episode's
    cpWER of these same turns when the caller has it (its pairing is reused, not redone)."""
    hyp_turns = hypothesis_turns(transcript)
    labelled_ref = any(t.speaker is not None for t in reference_turns)
    if not labelled_ref and not hyp_turns:
        return None
    turn_words = [normalize_words(t.text) for t in reference_turns] if labelled_ref else []
    ref_speakers = (
        _reference_speakers(reference_turns, turn_words, alignment.ref_words)
        if labelled_ref
        else []
    )
    seg_of = _segment_of_hyp_word(transcript)
    counts: dict[str, ErrorCounts] = {s: ErrorCounts(0, 0, 0, 0, 0) for s in ref_speakers}
    # Per segment: the reference speakers of the words aligned to it.
    heard: dict[int, Counter[str]] = {}
    ref_times: dict[int, list[float]] = {}  # reference turn -> its aligned words' times
    turn_of_word = [k for k, w in enumerate(turn_words) for _ in w]
    if len(turn_of_word) != len(alignment.ref_words):
        turn_of_word = []  # normalised otherwise turn by turn: no reference lane
    if len(seg_of) != len(alignment.hyp_words):
        seg_of = []  # not this transcript's alignment: no segment is judged
    r = h = 0
    speaker = ref_speakers[0] if ref_speakers else None
    for step in alignment.words:
        if step.op != "insert":
            speaker = ref_speakers[r] if ref_speakers else None
            if turn_of_word and labelled_ref:
                ref_times.setdefault(turn_of_word[r], []).append(step.time)
            r += 1
        if speaker is not None:
            counts[speaker] = _add(counts[speaker], step.op)
        if step.op != "delete":
            if step.op != "insert" and speaker is not None and h < len(seg_of):
                heard.setdefault(seg_of[h], Counter())[speaker] += 1
            h += 1
    names = (
        _label_names(reference_turns, hyp_turns, cpwer_score) if labelled_ref and hyp_turns else {}
    )
    pairs = _pairs(reference_turns, hyp_turns, names) if names else {}
    by_ref = {ref: label for label, ref in names.items() if ref is not None}
    speakers = tuple(
        SpeakerWer(s, counts[s], by_ref.get(s), pairs.get(s)) for s in dict.fromkeys(ref_speakers)
    )
    wrong_segments = {
        k: c.most_common(1)[0][0]
        for k, c in heard.items()
        if transcript.segments[k].speaker is not None
        and names
        and names.get(transcript.segments[k].speaker or "") != c.most_common(1)[0][0]
    }
    labelled = sum(1 for k in heard if transcript.segments[k].speaker is not None)
    return SpeakerReport(
        speakers=speakers,
        wrong_turns=_wrong_turns(transcript, wrong_segments, names),
        reference_spans=tuple(
            Span("reference", min(times), max(times), reference_turns[k].speaker or UNLABELLED)
            for k, times in sorted(ref_times.items())
        ),
        hypothesis_spans=tuple(
            Span(
                seg.speaker,
                seg.start,
                seg.end,
                names.get(seg.speaker) if names else None,
                wrong=k in wrong_segments,
            )
            for k, seg in enumerate(transcript.segments)
            if seg.speaker is not None and seg.end > seg.start
        ),
        label_names=tuple(names.items()),
        segments_labelled=labelled if names else 0,
        segments_wrong=len(wrong_segments),
    )


def _label_names(
    reference: Sequence[SpeakerTurn],
    hypothesis: Sequence[SpeakerTurn],
    known: SpeakerScore | None = None,
) -> dict[str, str | None]:
    """Each transcript label -> the reference speaker cpWER's best permutation pairs it with
    (``known``'s pairing when it is of these speakers on both sides)."""
    names: dict[str, str | None] = {t.speaker or UNLABELLED: None for t in hypothesis}
    refs = {t.speaker or UNLABELLED for t in reference}
    same = (
        known is not None
        and known.hyp_speakers == len(names)
        and known.ref_speakers == len(refs)
        and all(r in refs and (h is None or h in names) for r, h in known.mapping)
    )
    score = known if same and known is not None else cpwer(reference, hypothesis)
    for ref, hyp in score.mapping:
        if hyp is not None:
            names[hyp] = ref
    return names


def _pairs(
    reference: Sequence[SpeakerTurn],
    hypothesis: Sequence[SpeakerTurn],
    names: dict[str, str | None],
) -> dict[str, ErrorCounts]:
    """Reference speaker -> errors of its words against its paired label's words."""
    ref, hyp = words_by_speaker(reference), words_by_speaker(hypothesis)
    return {
        name: pair_counts(ref.get(name, []), hyp.get(label, []))
        for label, name in names.items()
        if name is not None
    }


def _wrong_turns(
    transcript: Transcript, wrong: dict[int, str], names: dict[str, str | None]
) -> tuple[WrongTurn, ...]:
    turns: list[WrongTurn] = []
    last = -2
    for k in sorted(wrong):
        seg = transcript.segments[k]
        label = seg.speaker or UNLABELLED
        prev = turns[-1] if turns else None
        if prev and last == k - 1 and prev.label == label and prev.speaker == wrong[k]:
            text = f"{prev.text} {seg.text.strip()}"
            turns[-1] = WrongTurn(prev.start, seg.end, label, prev.labelled_as, wrong[k], text)
        else:
            turns.append(
                WrongTurn(seg.start, seg.end, label, names.get(label), wrong[k], seg.text.strip())
            )
        last = k
    return tuple(turns)


# --- rendering ---------------------------------------------------------------------------------


def speaker_colours(report: SpeakerReport) -> dict[str, str]:
    """Reference speaker -> colour, in order of first appearance."""
    names = [s.speaker for s in report.speakers]
    names += [n for _label, n in report.label_names if n is not None and n not in names]
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


_LANE_H = 18
_LABEL_W = 170
_PLOT_W = 900


def timeline_svg(report: SpeakerReport, duration_s: float) -> str:
    """The speaker timeline as an inline SVG: a lane for the reference (where its words fall),
    then one per transcript label; wrongly labelled segments outlined in red."""
    colours = speaker_colours(report)
    lanes = ["reference"] if report.reference_spans else []
    lanes += list(dict.fromkeys(s.lane for s in report.hypothesis_spans))
    scale = _PLOT_W / max(duration_s, 1.0)
    named = dict(report.label_names)
    rows = []
    for i, lane in enumerate(lanes):
        y = 4 + i * (_LANE_H + 6)
        title = "reference" if lane == "reference" else lane
        if lane != "reference" and named.get(lane) and named[lane] != lane:
            title += f" → {named[lane]}"
        rows.append(
            f'<text x="{_LABEL_W - 6}" y="{y + 13}" text-anchor="end">{html.escape(title)}</text>'
        )
    spans = [*report.reference_spans, *report.hypothesis_spans]
    for span in spans:
        y = 4 + lanes.index(span.lane) * (_LANE_H + 6)
        x = _LABEL_W + span.start * scale
        w = max((span.end - span.start) * scale, 1.0)
        fill = colours.get(span.speaker or "", UNMATCHED_COLOUR)
        stroke = f' stroke="{WRONG_COLOUR}" stroke-width="2"' if span.wrong else ""
        who = html.escape(span.speaker or "unmatched")
        rows.append(
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_LANE_H}" fill="{fill}"{stroke}>'
            f"<title>{html.escape(span.lane)}: {span.start:.1f}–{span.end:.1f} s ({who})"
            f"{' wrong speaker' if span.wrong else ''}</title></rect>"
        )
    axis_y = 4 + len(lanes) * (_LANE_H + 6)
    step = _tick_step(duration_s)
    t = 0.0
    while t <= duration_s + 1e-6:
        x = _LABEL_W + t * scale
        rows.append(
            f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 4}" stroke="#888"/>'
            f'<text x="{x:.1f}" y="{axis_y + 15}" text-anchor="middle">{t:g}</text>'
        )
        t += step
    height = axis_y + 20
    return (
        f'<svg id="speaker-timeline" xmlns="http://www.w3.org/2000/svg" '
        f'width="{_LABEL_W + _PLOT_W + 20}" height="{height}" '
        f'font-family="system-ui,sans-serif" font-size="11" role="img" '
        f'aria-label="speaker timeline">{"".join(rows)}</svg>'
    )


def _tick_step(duration_s: float) -> float:
    for step in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600):
        if duration_s / step <= 12:
            return float(step)
    return 7200.0


__all__ = [
    "SpeakerReport",
    "SpeakerWer",
    "Span",
    "WrongTurn",
    "speaker_colours",
    "speaker_report",
    "timeline_svg",
]
