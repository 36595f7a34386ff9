"""What an episode run shows in the UI: its final message, artifact keys, chunk table rows,
the outputs list, and one-line failures.

The quality report itself is pipeline.quality.report's markdown; only Prefect-side shaping is
here. Chunks are shown by number, counted from 1 as the task names count them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.exceptions import FailedRun
from prefect.states import Failed, State

from pipeline.core.store import slugify
from pipeline.core.types import ChunkManifest, Score, chunk_number


@dataclass(frozen=True)
class ArtifactKeys:
    """The keys of an episode's artifacts (lowercase letters, digits, dashes): each run of
    the episode adds a version under the same key, listed on the Artifacts page."""

    quality: str
    chunks: str
    progress: str


def artifact_keys(episode_id: str) -> ArtifactKeys:
    """quality-<slug>, chunks-<slug> and progress-<slug> of an episode."""
    slug = slugify(episode_id, max_len=100)
    return ArtifactKeys(f"quality-{slug}", f"chunks-{slug}", f"progress-{slug}")


def quality_key(episode_id: str) -> str:
    """The artifact key of an episode's quality report."""
    return artifact_keys(episode_id).quality


def pct(value: float | None) -> str:
    """A rate as users read it everywhere: 6.8%, or – when there is none."""
    return "–" if value is None else f"{value:.1%}"


def outcome_message(summary: Mapping[str, Any]) -> str:
    """The headline of a finished run: "WER 6.8% · 41 chunks · 2 flagged, 1 repaired"."""
    wer = "not scored" if summary.get("wer") is None else f"WER {pct(summary['wer'])}"
    flagged, repaired = len(summary.get("flagged", ())), len(summary.get("repaired", ()))
    chunks = f"{summary['chunks']} chunk{'' if summary['chunks'] == 1 else 's'}"
    return f"{wer} · {chunks} · {flagged} flagged, {repaired} repaired"


def one_line(exc: BaseException) -> str:
    """An error's message as one line (the first), at most 500 characters."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:500]


class _QuietExpectedFailures(logging.Filter):
    """Drops what Prefect logs a second time, with a traceback that says nothing, when a run
    or task *returns* a Failed state (podscribe's expected failures, already logged once as
    one line and kept as the state message):

    - a task: "Task run failed with state: Failed(...)" with an empty traceback
      ("NoneType: None"), beside its own "Finished in state Failed('…')";
    - a deployment's flow run: "Engine execution exited with unexpected exception" with the
      traceback of the FailedRun that the engine raises for the Failed state it was given.

    A run or task that *raises* keeps its traceback (a bug should show where it is).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith("Task run failed with state:"):
            return False
        if message.startswith("Engine execution exited with unexpected exception"):
            kind = record.exc_info[0] if record.exc_info else None
            return not (kind is not None and issubclass(kind, FailedRun))
        return True


_QUIET = _QuietExpectedFailures()


def quiet_failed_state_logs() -> None:
    """Install the filter above on Prefect's flow-run and task-run loggers (once)."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        logger = logging.getLogger(name)
        if _QUIET not in logger.filters:
            logger.addFilter(_QUIET)


def failed_once(exc: BaseException) -> State[Any]:
    """Log an expected failure once, as one line without a traceback, and return the Failed
    state that carries the same line as its message."""
    message = one_line(exc)
    get_run_logger().error(message)
    return Failed(message=message)


def chunk_rows(
    manifest: ChunkManifest,
    statuses: Mapping[int, str],
    score: Score | None,
    errors: Mapping[int, str] | None = None,
) -> list[dict[str, object]]:
    """One row per chunk: its number (from 1), start, end, duration, WER, status, error."""
    wers = {c.chunk_index: c.wer for c in score.chunks} if score else {}
    errors = errors or {}
    return [
        {
            "chunk": chunk_number(c.index),
            "start (s)": round(c.start_s, 2),
            "end (s)": round(c.end_s, 2),
            "duration (s)": round(c.duration_s, 2),
            "WER": pct(wers.get(c.index)),
            "status": statuses.get(c.index, "kept"),
            "error": errors.get(c.index, ""),
        }
        for c in manifest.chunks
    ]


def outputs_markdown(files: Mapping[str, Path]) -> str:
    """Where the episode's outputs are, as a markdown list; the HTML report first, linked."""
    report = files.get("report.html")
    lines = []
    if report is not None:
        uri = Path(report).resolve().as_uri()
        lines.append(f"- the full report with plots: [report.html]({uri}) (`{report}`)\n")
    lines += [f"- `{path}`\n" for name, path in files.items() if name != "report.html"]
    return "\n\n## Outputs\n\n" + "".join(lines)
