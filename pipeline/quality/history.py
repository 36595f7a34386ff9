"""Every run's score, kept: an append-only JSON Lines file (``transcripts/history.jsonl``).

One line per finished run: which episode (and feed), which model and weights, the options and
code version, WER/CER and the WER of each chunk, so that `podscribe history` can show how an
episode's WER moved across runs and models and `podscribe compare` which chunks moved.

Appends are safe across processes: each record is one ``write`` of one line under an exclusive
``flock`` on the file, so concurrent runs never interleave or tear lines. Readers skip a line
they cannot parse (a file edited by hand) instead of failing the whole history.

On a shared storage root (``PODSCRIBE_STORAGE_URL``) the history is one object per run under
``transcripts/history/`` instead: object stores have no append and no lock that every fsspec
filesystem offers, so a read-modify-write of one shared file would lose the record of one of
two machines finishing at once. One object per record, named by its time and run id, is
written by one atomic put and never rewritten; ``read_stored_history`` lists them in order.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import PodscribeError
from pipeline.core.storage import Storage
from pipeline.core.store import DISK_ERRNOS, disk_error
from pipeline.core.types import Score, Transcript

HISTORY_NAME = "history.jsonl"
HISTORY_PREFIX = "transcripts/history"  # on a storage root: one object per record
SCHEMA = 1  # bump when a record's meaning changes


class HistoryError(PodscribeError):
    """A run id is unknown or ambiguous, or the history file cannot be read."""


@dataclass(frozen=True)
class ChunkRecord:
    """One chunk's numbers in a run record."""

    index: int
    start_s: float
    end_s: float
    ref_words: int
    errors: int
    wer: float | None


@dataclass(frozen=True)
class RunRecord:
    """One finished run, as kept in the history file."""

    run_id: str
    recorded_at: str  # UTC, ISO 8601
    episode_id: str
    feed: str | None
    model: str
    weights_sha256: str
    code_version: str
    options: dict[str, Any]  # transcribe and chunk options, as recorded in the provenance
    wer: float | None
    cer: float | None
    duration_s: float
    elapsed_s: float | None
    chunks: tuple[ChunkRecord, ...]
    flags: dict[str, list[str]]  # chunk index (as text) → flags raised
    reference_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object written as one line."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["chunks"] = [c.__dict__ for c in self.chunks]
        d["schema"] = SCHEMA
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RunRecord:
        """Read one line's object back."""
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["chunks"] = tuple(ChunkRecord(**c) for c in d.get("chunks", []))
        fields.setdefault("reference_sha256", None)
        return cls(**fields)


def new_run_id(now: float | None = None) -> str:
    """A sortable, unique run id: UTC time plus random hex (``20250101-120000-3fa9c1``)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now if now is not None else time.time()))
    return f"{stamp}-{secrets.token_hex(3)}"


def make_record(
    transcript: Transcript,
    score: Score | None,
    *,
    feed: str | None = None,
    elapsed_s: float | None = None,
    flags: Mapping[int, Sequence[str]] | None = None,
    run_id: str | None = None,
) -> RunRecord:
    """The history record of a finished run (from its transcript's provenance and its score)."""
    prov = transcript.provenance
    models = prov.get("models") or [{}]
    model = (
        models[0]
        if len(models) == 1
        else {
            "name": "+".join(m.get("name", "?") for m in models),
            "sha256": "+".join(m.get("sha256", "?")[:12] for m in models),
        }
    )
    chunk_scores = {c.chunk_index: c for c in score.chunks} if score else {}
    chunks = []
    for ct in transcript.chunks:
        cs = chunk_scores.get(ct.chunk_index)
        chunks.append(
            ChunkRecord(
                index=ct.chunk_index,
                start_s=ct.start_s,
                end_s=ct.end_s,
                ref_words=cs.counts.ref_words if cs else 0,
                errors=cs.counts.errors if cs else 0,
                wer=cs.wer if cs else None,
            )
        )
    return RunRecord(
        run_id=run_id or new_run_id(),
        recorded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        episode_id=transcript.episode_id,
        feed=feed,
        model=str(model.get("name", "?")),
        weights_sha256=str(model.get("sha256", "?")),
        code_version=str(prov.get("code_version", "?")),
        options={
            "transcribe": prov.get("transcribe_options"),
            "chunk": prov.get("chunk_options"),
        },
        wer=score.wer if score else None,
        cer=score.cer if score else None,
        duration_s=transcript.duration_s,
        elapsed_s=None if elapsed_s is None else round(elapsed_s, 3),
        chunks=tuple(chunks),
        flags={str(k): list(v) for k, v in (flags or {}).items() if v},
        reference_sha256=score.reference_sha256 if score else None,
    )


def append_record(path: Path, record: RunRecord) -> Path:
    """Append one record as one line, under an exclusive lock (safe across processes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(line)
                while view:  # os.write may write less than asked; finish the line under the lock
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            except OSError as exc:
                os.ftruncate(fd, size)  # no half line: readers would skip it, but why leave it
                raise disk_error(path, exc) if exc.errno in DISK_ERRNOS else exc from exc
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    return path


def record_key(record: RunRecord) -> str:
    """The storage key of one record: its time first, so keys list in the order of runs."""
    stamp = "".join(c for c in record.recorded_at if c.isalnum())
    return f"{HISTORY_PREFIX}/{stamp}-{slug_of(record.run_id)}.json"


def slug_of(text: str) -> str:
    """``text`` with only letters, digits, '-' and '_' (safe in a key)."""
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in text)[:80]


def put_record(storage: Storage, record: RunRecord) -> str:
    """Store one record as its own object (one atomic put); returns its key."""
    data = (json.dumps(record.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
    return storage.put_bytes(record_key(record), data)


def read_stored_history(storage: Storage) -> list[RunRecord]:
    """All records on a storage root, oldest first; unparsable objects are skipped."""
    records = []
    for key in storage.list(HISTORY_PREFIX):
        try:
            records.append(RunRecord.from_json(json.loads(storage.get_bytes(key))))
        except (ValueError, TypeError, KeyError):
            continue
    return records


def read_history(path: Path) -> list[RunRecord]:
    """All records in file order; unparsable lines are skipped. No file: no records."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                records.append(RunRecord.from_json(json.loads(line)))
            except (ValueError, TypeError, KeyError):
                continue
    return records


def select_runs(
    records: Iterable[RunRecord], feed: str | None = None, episode: str | None = None
) -> list[RunRecord]:
    """Runs of one feed and/or one episode, oldest first."""
    chosen = [
        r
        for r in records
        if (feed is None or r.feed == feed) and (episode is None or r.episode_id == episode)
    ]
    return sorted(chosen, key=lambda r: (r.episode_id, r.recorded_at, r.run_id))


def find_run(records: Sequence[RunRecord], run_id: str) -> RunRecord:
    """The run whose id is ``run_id`` or starts with it (a unique prefix is enough)."""
    exact = [r for r in records if r.run_id == run_id]
    if exact:
        return exact[-1]
    matches = [r for r in records if r.run_id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise HistoryError(f"no run {run_id!r} in the history: `podscribe history` lists them")
    raise HistoryError(f"run id {run_id!r} is ambiguous ({len(matches)} runs): give more of it")


@dataclass(frozen=True)
class ChunkChange:
    """How one chunk's WER moved from run A to run B."""

    index: int
    start_s: float
    end_s: float
    wer_a: float | None
    wer_b: float | None
    errors_a: int
    errors_b: int
    verdict: str  # "better", "worse", "same" or "unscored"
    moved: bool  # the chunk's bounds differ between the runs (chunking changed)


def compare_runs(a: RunRecord, b: RunRecord, bound_tolerance_s: float = 0.5) -> list[ChunkChange]:
    """Chunk by chunk, whether run B has fewer (better) or more (worse) errors than run A.

    Chunks are matched by index; ``moved`` marks a pair whose bounds differ by more than
    ``bound_tolerance_s`` (different chunking), where the comparison is only approximate.
    """
    b_chunks = {c.index: c for c in b.chunks}
    changes = []
    for ca in a.chunks:
        cb = b_chunks.get(ca.index)
        if cb is None:
            continue
        if ca.wer is None or cb.wer is None:
            verdict = "unscored"
        elif cb.errors < ca.errors:
            verdict = "better"
        elif cb.errors > ca.errors:
            verdict = "worse"
        else:
            verdict = "same"
        moved = (
            abs(ca.start_s - cb.start_s) > bound_tolerance_s
            or abs(ca.end_s - cb.end_s) > bound_tolerance_s
        )
        changes.append(
            ChunkChange(
                ca.index,
                cb.start_s,
                cb.end_s,
                ca.wer,
                cb.wer,
                ca.errors,
                cb.errors,
                verdict,
                moved,
            )
        )
    return changes
