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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.core.store import read_json, sha256_text, write_json_atomic
from pipeline.core.types import Chunk, ChunkTranscript, chunk_transcript_from_dict, to_dict
from pipeline.core.version import code_version

# Bump when the stored form or the meaning of a ChunkTranscript changes: older entries are
# then never matched (their key differs) and are simply transcribed again.
ENTRY_FORMAT = 1
STORE_DIRNAME = ".chunk-results"  # under the audio root; episode ids never start with a dot


def chunk_result_key(chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel) -> str:
    """sha256 of what a chunk's transcript depends on; segment times are episode times, so
    the chunk's index and first sample are part of it, not only its audio."""
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
    return sha256_text(json.dumps(fields, sort_keys=True))


def _digest(transcript: dict[str, Any]) -> str:
    return sha256_text(json.dumps(transcript, sort_keys=True, ensure_ascii=False))


@dataclass(frozen=True)
class ChunkResultStore:
    """A folder of finished chunk transcripts, one JSON file per key."""

    root: Path

    def path_for(self, key: str) -> Path:
        """Where the entry of ``key`` lives (two-character fan-out keeps folders small)."""
        return Path(self.root) / key[:2] / f"{key}.json"

    def get(
        self, chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel
    ) -> ChunkTranscript | None:
        """The stored transcript of ``chunk`` made this way, or None (never a doubtful one)."""
        key = chunk_result_key(chunk, options, loaded)
        path = self.path_for(key)
        if not path.is_file():
            return None
        try:
            entry = read_json(path)
            transcript = entry["transcript"]
            trusted = (
                entry.get("key") == key
                and entry.get("digest") == _digest(transcript)
                and transcript.get("chunk_sha256") == chunk.sha256
                and transcript.get("chunk_index") == chunk.index
            )
            result = chunk_transcript_from_dict(transcript) if trusted else None
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            result = None
        if result is None:
            path.unlink(missing_ok=True)  # damaged or foreign: never read it again
        return result

    def put(
        self, result: ChunkTranscript, chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel
    ) -> Path:
        """Store a finished chunk transcript atomically; returns the entry's path."""
        key = chunk_result_key(chunk, options, loaded)
        transcript = to_dict(result)
        entry = {"key": key, "digest": _digest(transcript), "transcript": transcript}
        return write_json_atomic(self.path_for(key), entry)

    def count(self) -> int:
        """How many entries the store holds (whatever their key)."""
        return sum(1 for _ in Path(self.root).glob("??/*.json"))
