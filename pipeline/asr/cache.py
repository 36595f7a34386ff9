"""Finished chunk transcripts, stored as each is done, so a crashed run loses none of them.

A run killed mid-episode (``kill -9``, a reboot, a full disk) has already spent the work of its
finished chunks: the next run of the same episode takes them from here and transcribes only the
rest. An entry is trusted only when it answers exactly the question asked: the key is the
sha256 of everything the chunk's text depends on (the chunk WAV's sha256 and its place in the
episode, the transcription options, the weights' sha256, the device and the code version), and
the entry repeats that key and a digest of its own transcript. Entries are written atomically
(temp file, fsync, rename), so a crash leaves a whole entry or none; anything unreadable,
foreign or damaged is ignored (and removed) and the chunk is transcribed again.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.core.errors import StorageError
from pipeline.core.storage import Storage
from pipeline.core.store import json_bytes, read_json, sha256_text, write_json_atomic
from pipeline.core.types import Chunk, ChunkTranscript, chunk_transcript_from_dict, to_dict
from pipeline.core.version import code_version

# Bump when the stored form or the meaning of a ChunkTranscript changes: older entries are
# then never matched (their key differs) and are simply transcribed again.
ENTRY_FORMAT = 2  # 2: "clean" means the filler filter (quality.style), no longer a prompt
STORE_DIRNAME = ".chunk-results"  # under the audio root; episode ids never start with a dot


def conditioned_on(
    chunks: Sequence[Chunk], chunk: Chunk, options: TranscribeOptions
) -> tuple[Chunk, ...]:
    """The chunks before ``chunk`` in its run of ``options.condition_chunks`` (its text
    depends on their texts: each is the next one's prompt), first to last; () without
    conditioning."""
    by_index = {c.index: c for c in chunks}
    before: list[Chunk] = []
    index = chunk.index
    while options.conditions(index - 1, index) and index - 1 in by_index:
        index -= 1
        before.append(by_index[index])
    return tuple(reversed(before))


def chunk_result_key(
    chunk: Chunk,
    options: TranscribeOptions,
    loaded: LoadedModel,
    before: Sequence[Chunk] = (),
) -> str:
    """sha256 of what a chunk's transcript depends on; segment times are episode times, so
    the chunk's index and first sample are part of it, not only its audio. ``before``: the
    chunks it was conditioned on (``conditioned_on``), whose audio its prompt comes from."""
    fields = {
        "format": ENTRY_FORMAT,
        "code_version": code_version(),
        "chunk_sha256": chunk.sha256,
        "chunk_index": chunk.index,
        "start_sample": chunk.start_sample,
        "end_sample": chunk.end_sample,
        "sample_rate": chunk.sample_rate,
        "options": options.to_dict(),
        "model_sha256": loaded.info.sha256,
        "device": loaded.device,
    }
    if before:
        fields["conditioned_on"] = [[c.sha256, c.start_sample, c.end_sample] for c in before]
    return sha256_text(json.dumps(fields, sort_keys=True))


def _digest(transcript: dict[str, Any]) -> str:
    return sha256_text(json.dumps(transcript, sort_keys=True, ensure_ascii=False))


def make_entry(key: str, result: ChunkTranscript, **made_by: Any) -> dict[str, Any]:
    """A store entry: the key, the transcript and its digest (and, when given, where it was
    made: a worker's host and process, which the digest does not cover)."""
    transcript = to_dict(result)
    entry = {"key": key, "digest": _digest(transcript), "transcript": transcript}
    return entry | ({"made_by": made_by} if made_by else {})


def _trusted_result(entry: Any, key: str, chunk: Chunk) -> ChunkTranscript | None:
    """The entry's transcript when it answers exactly ``key`` for ``chunk``, else None."""
    try:
        transcript = entry["transcript"]
        trusted = (
            entry.get("key") == key
            and entry.get("digest") == _digest(transcript)
            and transcript.get("chunk_sha256") == chunk.sha256
            and transcript.get("chunk_index") == chunk.index
        )
        return chunk_transcript_from_dict(transcript) if trusted else None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass(frozen=True)
class ChunkResultStore:
    """A folder of finished chunk transcripts, one JSON file per key."""

    root: Path

    def path_for(self, key: str) -> Path:
        """Where the entry of ``key`` lives (two-character fan-out keeps folders small)."""
        return Path(self.root) / key[:2] / f"{key}.json"

    def get(
        self,
        chunk: Chunk,
        options: TranscribeOptions,
        loaded: LoadedModel,
        before: Sequence[Chunk] = (),
    ) -> ChunkTranscript | None:
        """The stored transcript of ``chunk`` made this way (after ``before``), or None
        (never a doubtful one)."""
        key = chunk_result_key(chunk, options, loaded, before)
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            result = _trusted_result(read_json(path), key, chunk)
        except (OSError, ValueError):
            result = None
        if result is None:
            path.unlink(missing_ok=True)  # damaged or foreign: never read it again
        return result

    def put(
        self,
        result: ChunkTranscript,
        chunk: Chunk,
        options: TranscribeOptions,
        loaded: LoadedModel,
        before: Sequence[Chunk] = (),
    ) -> Path:
        """Store a finished chunk transcript (made after ``before``) atomically; returns the
        entry's path."""
        key = chunk_result_key(chunk, options, loaded, before)
        return write_json_atomic(self.path_for(key), make_entry(key, result))

    def count(self) -> int:
        """How many entries the store holds (whatever their key)."""
        return sum(1 for _ in Path(self.root).glob("??/*.json"))


@dataclass(frozen=True)
class StoredChunkResults:
    """The same entries under a shared storage root (``audio/.chunk-results/`` there), for
    chunk tasks on machines that share nothing but that root. Each entry also records which
    host and process made it."""

    storage: Storage
    prefix: str = f"audio/{STORE_DIRNAME}"

    def key_for(self, key: str) -> str:
        """The storage key of the entry of ``key`` (fanned out as on disk)."""
        return f"{self.prefix}/{key[:2]}/{key}.json"

    def get(
        self,
        chunk: Chunk,
        options: TranscribeOptions,
        loaded: LoadedModel,
        before: Sequence[Chunk] = (),
    ) -> ChunkTranscript | None:
        """The stored transcript of ``chunk`` made this way (after ``before``), or None
        (never a doubtful one)."""
        key = chunk_result_key(chunk, options, loaded, before)
        where = self.key_for(key)
        if not self.storage.exists(where):
            return None
        try:
            data = self.storage.get_bytes(where)
        except StorageError:
            return None  # unreadable now (a timeout, throttling): transcribe it, keep the entry
        try:
            result = _trusted_result(json.loads(data), key, chunk)
        except ValueError:
            result = None
        if result is None:
            self.storage.delete(where)  # damaged or foreign: never read it again
        return result

    def put(
        self,
        result: ChunkTranscript,
        chunk: Chunk,
        options: TranscribeOptions,
        loaded: LoadedModel,
        before: Sequence[Chunk] = (),
    ) -> str:
        """Store a finished chunk transcript (made after ``before``; one atomic put); returns
        its storage key."""
        key = chunk_result_key(chunk, options, loaded, before)
        entry = make_entry(key, result, host=socket.gethostname(), pid=os.getpid())
        return self.storage.put_bytes(self.key_for(key), json_bytes(entry))

    def entries(self) -> list[dict[str, Any]]:
        """Every entry stored (whatever its key), e.g. to see where chunks were transcribed."""
        keys = [k for k in self.storage.list(self.prefix) if k.endswith(".json")]
        return [json.loads(self.storage.get_bytes(k)) for k in keys]
