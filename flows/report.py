"""Artifact helpers of an episode run: the report key, the chunk table rows, the outputs list.

The quality report itself is pipeline.quality.report's markdown; only Prefect-side shaping is here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pipeline.core.store import slugify
from pipeline.core.types import ChunkManifest, Score


def quality_key(episode_id: str) -> str:
    """The artifact key of an episode's quality report (lowercase letters, digits, dashes)."""
    return "quality-" + slugify(episode_id, max_len=100)


def chunk_rows(
    manifest: ChunkManifest, statuses: Mapping[int, str], score: Score | None
) -> list[dict[str, object]]:
    """One row per chunk: index, start, end, WER, duration, status."""
    wers = {c.chunk_index: c.wer for c in score.chunks} if score else {}
    return [
        {
            "index": c.index,
            "start": round(c.start_s, 2),
            "end": round(c.end_s, 2),
            "wer": _round(wers.get(c.index)),
            "duration": round(c.duration_s, 2),
            "status": statuses.get(c.index, "kept"),
        }
        for c in manifest.chunks
    ]


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def outputs_markdown(files: Mapping[str, Path]) -> str:
    """Where the episode's outputs are, as a markdown list."""
    return "\n\n## Outputs\n\n" + "".join(f"- `{path}`\n" for path in files.values())
