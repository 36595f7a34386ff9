"""Word timings checked against known parts: where each stretch of speech starts and the
silences between them (``parts.tsv``: line, start_s, end_s, ...; the dev episode has one).

A part's first word must start inside [start, start + window] (the part's own recording opens
with a little silence, hence the window), and no word may start in a silence between parts
(or before the first one): that is where Whisper puts a word it stretched over a pause.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import ReferenceError
from pipeline.core.types import Transcript, Word

DEFAULT_WINDOW_S = 0.8


@dataclass(frozen=True)
class Part:
    """One stretch of the episode with known bounds (a line of parts.tsv)."""

    line: int
    start_s: float
    end_s: float


@dataclass(frozen=True)
class PartStart:
    """A part and the first word the transcript starts in it."""

    part: Part
    word: str | None  # None: no word starts in the part
    start_s: float | None
    deviation_s: float | None  # word start - part start
    ok: bool


@dataclass(frozen=True)
class GapWord:
    """A word that starts in the silence before ``before_line``."""

    before_line: int
    word: str
    start_s: float


@dataclass(frozen=True)
class WordTimingCheck:
    """The outcome of ``check_word_timing``."""

    window_s: float
    starts: tuple[PartStart, ...]
    gap_words: tuple[GapWord, ...]
    words: int  # timed words in the transcript

    @property
    def parts_ok(self) -> int:
        return sum(s.ok for s in self.starts)

    @property
    def max_deviation_s(self) -> float | None:
        devs = [abs(s.deviation_s) for s in self.starts if s.deviation_s is not None]
        return max(devs) if devs else None

    @property
    def passed(self) -> bool:
        return self.parts_ok == len(self.starts) and not self.gap_words

    def as_dict(self) -> dict[str, object]:
        return {
            "parts": len(self.starts),
            "parts_ok": self.parts_ok,
            "window_s": self.window_s,
            "max_deviation_s": self.max_deviation_s,
            "words_in_gaps": len(self.gap_words),
            "words": self.words,
            "passed": self.passed,
            "starts": [
                {
                    "line": s.part.line,
                    "part_start_s": s.part.start_s,
                    "word": s.word,
                    "word_start_s": s.start_s,
                    "deviation_s": s.deviation_s,
                    "ok": s.ok,
                }
                for s in self.starts
            ],
            "gap_words": [
                {"before_line": g.before_line, "word": g.word, "start_s": g.start_s}
                for g in self.gap_words
            ],
        }


def read_parts(path: Path) -> tuple[Part, ...]:
    """Read a parts.tsv (a header, then line, start_s, end_s and anything else), in order."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        parts = tuple(Part(int(r["line"]), float(r["start_s"]), float(r["end_s"])) for r in rows)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ReferenceError(
            f"cannot read parts from {path}: {exc} (a TSV with columns line, start_s, end_s)"
        ) from exc
    if not parts or any(b.start_s < a.end_s for a, b in zip(parts, parts[1:], strict=False)):
        raise ReferenceError(f"{path}: parts must be listed in order and must not overlap")
    return parts


def transcript_words(transcript: Transcript) -> list[Word]:
    """Every timed word of the transcript, in time order."""
    words = [w for s in transcript.segments for w in (s.words or ()) if w.text.strip()]
    return sorted(words, key=lambda w: w.start)


def check_word_timing(
    words: Sequence[Word], parts: Sequence[Part], window_s: float = DEFAULT_WINDOW_S
) -> WordTimingCheck:
    """Check timed ``words`` (episode seconds) against ``parts`` (see the module docstring)."""
    starts: list[PartStart] = []
    gap_words: list[GapWord] = []
    previous_end = -math.inf  # a word before the first part (even at 0.0 s) is in a gap
    for part in parts:
        gap_words += [
            GapWord(part.line, w.text.strip(), w.start)
            for w in words
            if previous_end < w.start < part.start_s
        ]
        inside = [w for w in words if part.start_s <= w.start < part.end_s]
        # A word stretched back over the gap still opens the part: look from the gap's middle.
        opening = [
            w for w in words if (max(previous_end, 0.0) + part.start_s) / 2 <= w.start < part.end_s
        ]
        first = opening[0] if opening else (inside[0] if inside else None)
        if first is None:
            starts.append(PartStart(part, None, None, None, False))
        else:
            dev = round(first.start - part.start_s, 3)
            starts.append(
                PartStart(part, first.text.strip(), first.start, dev, 0 <= dev <= window_s)
            )
        previous_end = part.end_s
    return WordTimingCheck(window_s, tuple(starts), tuple(gap_words), len(words))
