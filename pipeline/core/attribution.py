"""Who says each segment and word: speaker turns laid over a transcript's segments.

A segment never spans two speakers. Where its words are timed, each word goes to the speaker
whose turn it overlaps most (or the nearest turn, for a word in a pause the diarizer left
out), and the segment is cut between words wherever the speaker changes. Without word times,
the segment is cut where the turns change inside it, its text divided in proportion to the
time each speaker holds, at the nearest space.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence

from pipeline.core.types import Segment, SpeakerSpan, Word

__all__ = ["MIN_PIECE_S", "attribute_speakers", "speaker_at"]

# Without word times a cut is a guess: a speaker holding less of a segment than this (a
# boundary a few frames off, a backchannel under the talker) does not split it.
MIN_PIECE_S = 0.5


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def speaker_at(turns: Sequence[SpeakerSpan], start: float, end: float) -> str | None:
    """The speaker who talks most in [start, end]; the nearest turn's when none does."""
    if not turns:
        return None
    shared: dict[str, float] = {}
    for t in turns:
        if t.end > start and t.start < end:
            shared[t.speaker] = shared.get(t.speaker, 0.0) + _overlap(start, end, t.start, t.end)
    if shared and max(shared.values()) > 0:
        return max(shared, key=lambda k: shared[k])
    mid = (start + end) / 2
    return min(
        turns,
        key=lambda t: 0.0 if t.start <= mid <= t.end else min(abs(t.start - mid), abs(t.end - mid)),
    ).speaker


def _pieces(turns: Sequence[SpeakerSpan], start: float, end: float) -> list[tuple[str, float]]:
    """(speaker, seconds) of each run of one speaker inside [start, end], in order; runs
    shorter than MIN_PIECE_S go to their neighbour."""
    inside = sorted((t for t in turns if t.end > start and t.start < end), key=lambda t: t.start)
    runs: list[tuple[str, float]] = []
    for t in inside:
        d = _overlap(start, end, t.start, t.end)
        runs = _push(runs, t.speaker, d)
    while len(runs) > 1:
        shortest = min(range(len(runs)), key=lambda i: runs[i][1])
        if runs[shortest][1] >= MIN_PIECE_S:
            break
        # the longer neighbour takes it
        n = shortest
        left = runs[n - 1][1] if n > 0 else -1.0
        right = runs[n + 1][1] if n + 1 < len(runs) else -1.0
        into = n - 1 if left >= right else n + 1
        merged = list(runs)
        merged[into] = (runs[into][0], runs[into][1] + runs[n][1])
        del merged[n]
        runs = []
        for speaker, d in merged:
            runs = _push(runs, speaker, d)
    return runs


def _push(runs: list[tuple[str, float]], speaker: str, d: float) -> list[tuple[str, float]]:
    if runs and runs[-1][0] == speaker:
        return [*runs[:-1], (speaker, runs[-1][1] + d)]
    return [*runs, (speaker, d)]


def _split_by_words(
    segment: Segment, words: tuple[Word, ...], turns: Sequence[SpeakerSpan]
) -> list[Segment]:
    speakers = [speaker_at(turns, w.start, max(w.end, w.start + 0.01)) for w in words]
    groups: list[tuple[str | None, list[Word]]] = []
    for w, s in zip(words, speakers, strict=True):
        if groups and groups[-1][0] == s:
            groups[-1][1].append(w)
        else:
            groups.append((s, [w]))
    out = []
    for n, (speaker, ws) in enumerate(groups):
        start = segment.start if n == 0 else ws[0].start
        end = segment.end if n == len(groups) - 1 else ws[-1].end
        # Word texts carry their leading spaces: each piece keeps the segment's own convention.
        lead = " " if segment.text.startswith(" ") else ""
        text = lead + "".join(w.text for w in ws).strip()
        out.append(
            dataclasses.replace(
                segment,
                start=start,
                end=max(end, start),
                text=text,
                speaker=speaker,
                words=tuple(dataclasses.replace(w, speaker=speaker) for w in ws),
            )
        )
    return out


def _split_by_time(segment: Segment, turns: Sequence[SpeakerSpan]) -> list[Segment]:
    pieces = _pieces(turns, segment.start, segment.end)
    if len(pieces) <= 1:
        speaker = pieces[0][0] if pieces else speaker_at(turns, segment.start, segment.end)
        return [dataclasses.replace(segment, speaker=speaker)]
    total = sum(d for _, d in pieces)
    text = segment.text
    spaces = [i for i, c in enumerate(text) if c == " " and i > 0]
    out: list[Segment] = []
    t0, c0, held = segment.start, 0, 0.0
    for n, (speaker, d) in enumerate(pieces):
        held += d
        last = n == len(pieces) - 1
        if last:
            c1, t1 = len(text), segment.end
        else:
            target = round(len(text) * held / total)
            k = bisect.bisect_left(spaces, target)
            near = [spaces[j] for j in (k - 1, k) if 0 <= j < len(spaces) and spaces[j] > c0]
            c1 = min(near, key=lambda i: abs(i - target)) if near else c0
            t1 = segment.start + (segment.end - segment.start) * held / total
        piece = text[c0:c1].strip()
        if segment.text.startswith(" "):
            piece = " " + piece
        if piece.strip():
            out.append(dataclasses.replace(segment, start=t0, end=t1, text=piece, speaker=speaker))
        elif out:  # no words left for this speaker: the previous piece runs on
            out[-1] = dataclasses.replace(out[-1], end=t1)
        t0, c0 = t1, c1
    return out or [dataclasses.replace(segment, speaker=pieces[0][0])]


def attribute_speakers(
    segments: Sequence[Segment], turns: Sequence[SpeakerSpan]
) -> tuple[Segment, ...]:
    """``segments`` with a speaker each (and on each word), cut where the speaker changes."""
    if not turns:
        return tuple(segments)
    out: list[Segment] = []
    for segment in segments:
        if segment.words:
            out.extend(_split_by_words(segment, segment.words, turns))
        else:
            out.extend(_split_by_time(segment, turns))
    return tuple(out)
