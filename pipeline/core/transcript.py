"""Merge chunk transcripts into the episode transcript and write it as JSON, text, SRT, VTT
and a Podcasting 2.0 JSON transcript; speakers, where segments have them, in every one."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.core.errors import TranscriptionError
from pipeline.core.store import atomic_files, json_bytes, read_json
from pipeline.core.types import (
    ChunkTranscript,
    Segment,
    Transcript,
    chunk_number,
    to_dict,
    transcript_from_dict,
)

TRANSCRIPT_FILES = (
    "transcript.json",
    "transcript.txt",
    "transcript.srt",
    "transcript.vtt",
    "transcript.podcast.json",  # <podcast:transcript type="application/json">
)
PODCAST_JSON_VERSION = "1.0.0"  # of the Podcasting 2.0 JSON transcript format


def merge_transcripts(
    episode_id: str,
    duration_s: float,
    chunks: Sequence[ChunkTranscript],
    provenance: dict[str, Any] | None = None,
) -> Transcript:
    """Join chunk transcripts in chunk order; their segments are already in episode time."""
    ordered = sorted(chunks, key=lambda c: c.chunk_index)
    indices = [c.chunk_index for c in ordered]
    if len(set(indices)) != len(indices):
        numbers = [chunk_number(i) for i in indices]
        raise TranscriptionError(f"episode {episode_id}: a chunk was transcribed twice: {numbers}")
    segments = tuple(seg for c in ordered for seg in c.segments)
    return Transcript(
        episode_id=episode_id,
        duration_s=round(duration_s, 3),
        segments=segments,
        chunks=tuple(ordered),
        provenance=dict(provenance or {}),
    )


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _voice(segment: Segment) -> str:
    """A WebVTT voice tag for the segment's speaker ("" when unknown); the name may not hold
    the characters that end the tag or start markup."""
    if segment.speaker is None:
        return ""
    name = " ".join(segment.speaker.translate(str.maketrans("<>&\n", "    ")).split())
    return f"<v {name}>" if name else ""


def to_srt(transcript: Transcript) -> str:
    """SubRip subtitles, one cue per segment, a ``<v Name>`` tag where the speaker is known."""
    cues = [
        f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{_voice(s)}{s.text}\n"
        for n, s in enumerate(transcript.segments, start=1)
    ]
    return "\n".join(cues)


def to_vtt(transcript: Transcript) -> str:
    """WebVTT captions, one cue per segment, a ``<v Name>`` tag where the speaker is known."""
    cues = [
        # "&" and "<" start markup in a cue: escaped, or a reader drops or misreads the text.
        f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n"
        f"{_voice(s)}{html.escape(s.text, quote=False)}\n"
        for s in transcript.segments
    ]
    return "WEBVTT\n\n" + "\n".join(cues)


def to_text(transcript: Transcript) -> str:
    """Plain text: one segment per line; with speakers, one "Name: …" paragraph per turn."""
    if all(s.speaker is None for s in transcript.segments):
        return "".join(f"{s.text}\n" for s in transcript.segments)
    turns: list[tuple[str | None, list[str]]] = []
    for s in transcript.segments:
        if not s.text.strip():
            continue
        if not turns or turns[-1][0] != s.speaker:
            turns.append((s.speaker, []))
        turns[-1][1].append(s.text.strip())
    paragraphs = [(f"{speaker}: " if speaker else "") + " ".join(texts) for speaker, texts in turns]
    return "\n\n".join(paragraphs) + "\n"


def to_podcast_json(transcript: Transcript) -> dict[str, Any]:
    """The Podcasting 2.0 JSON transcript, ``speaker`` where known: one entry per word where
    the words are timed (the format's segments may be words, as its own example's are: apps
    highlight the word being said), else one per segment."""
    segments: list[dict[str, Any]] = []

    def add(speaker: str | None, start: float, end: float, body: str) -> None:
        seg: dict[str, Any] = {} if speaker is None else {"speaker": speaker}
        seg.update(startTime=round(start, 3), endTime=round(end, 3), body=body)
        segments.append(seg)

    for s in transcript.segments:
        if not s.text.strip():
            continue
        words = [w for w in s.words or () if w.text.strip()]
        if words:
            for w in words:
                add(w.speaker or s.speaker, w.start, w.end, w.text.strip())
        else:
            add(s.speaker, s.start, s.end, s.text.strip())
    return {"version": PODCAST_JSON_VERSION, "segments": segments}


def render_transcript(transcript: Transcript) -> dict[str, bytes]:
    """The contents of the TRANSCRIPT_FILES, by file name."""
    return {
        "transcript.json": json_bytes(to_dict(transcript)),
        "transcript.txt": to_text(transcript).encode("utf-8"),
        "transcript.srt": to_srt(transcript).encode("utf-8"),
        "transcript.vtt": to_vtt(transcript).encode("utf-8"),
        "transcript.podcast.json": json_bytes(to_podcast_json(transcript)),
    }


def write_transcript(transcript: Transcript, out_dir: Path) -> dict[str, Path]:
    """Write the TRANSCRIPT_FILES into ``out_dir``, all of them or none."""
    # Rendered first, so a rendering bug cannot leave a mix of old and new files either.
    rendered = render_transcript(transcript)
    with atomic_files() as stage:
        return {name: stage(Path(out_dir) / name, data) for name, data in rendered.items()}


def load_transcript(path: Path) -> Transcript:
    """Read a transcript.json written by :func:`write_transcript`."""
    try:
        return transcript_from_dict(read_json(path))
    except FileNotFoundError as exc:
        raise TranscriptionError(f"transcript not found: {path}") from exc
    except (KeyError, TypeError, ValueError) as exc:
        raise TranscriptionError(
            f"{path} is not a podscribe transcript.json ({exc}): run `podscribe transcribe` first"
        ) from exc
