"""Read who-spoke-when references in RTTM (NIST Rich Transcription Time Marked) form.

One line per span: ``SPEAKER <file> <channel> <start> <duration> <NA> <NA> <name> <NA> <NA>``,
times in seconds. Other line types (``SPKR-INFO``, ``LEXEME``…) and ``;;`` / ``#`` comments
carry no speaker time and are skipped.
"""

from __future__ import annotations

import math
from pathlib import Path

from pipeline.core.errors import ReferenceError
from pipeline.core.types import SpeakerSpan

__all__ = ["parse_rttm", "read_rttm", "to_rttm"]


def parse_rttm(text: str, *, name: str = "RTTM") -> tuple[SpeakerSpan, ...]:
    """The SPEAKER spans of RTTM ``text``, in file order. ``name`` appears in errors."""
    spans: list[SpeakerSpan] = []
    files: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith((";;", "#")) or fields[0] != "SPEAKER":
            continue
        try:
            if len(fields) < 8:
                raise ValueError(f"{len(fields)} fields, 8 or more expected")
            start, duration = float(fields[3]), float(fields[4])
            if not (math.isfinite(start) and math.isfinite(duration)) or start < 0 or duration < 0:
                raise ValueError("start and duration must be finite and >= 0")
        except ValueError as exc:
            raise ReferenceError(
                f"{name} line {number} is not an RTTM SPEAKER line ({exc}): {line.strip()[:80]!r}"
            ) from None
        files.add(fields[1])
        spans.append(SpeakerSpan(fields[7], start, start + duration))
    if not spans:
        raise ReferenceError(f"{name} holds no SPEAKER lines: give an RTTM of the episode")
    if len(files) > 1:
        raise ReferenceError(
            f"{name} covers {len(files)} recordings ({', '.join(sorted(files)[:3])}…): "
            f"give the lines of this episode only"
        )
    return tuple(spans)


def read_rttm(path: str | Path) -> tuple[SpeakerSpan, ...]:
    """Read an RTTM file; ReferenceError if it is missing, unreadable or holds no speech."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ReferenceError(f"RTTM file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ReferenceError(f"cannot read RTTM file {path}: {exc}") from None
    return parse_rttm(text, name=str(path))


def to_rttm(spans: tuple[SpeakerSpan, ...], file_id: str) -> str:
    """RTTM text of ``spans`` for recording ``file_id`` (3 decimals, as most tools write).

    RTTM fields are split at spaces: a speaker named "Alice Smith" is written Alice_Smith."""
    return "".join(
        f"SPEAKER {file_id} 1 {s.start:.3f} {s.end - s.start:.3f} <NA> <NA> "
        f"{'_'.join(s.speaker.split()) or '<NA>'} <NA> <NA>\n"
        for s in spans
    )
