"""An episode's chunks on a shared storage root, for workers on other machines.

After cutting, the machine that cut publishes each chunk WAV and the manifest under
``audio/<episode_id>/`` of the storage root (the same layout as the local audio root). A worker
elsewhere fetches one chunk into a folder of its own and checks it against the sha256 the
manifest recorded before it transcribes anything: it needs nothing from the cutting machine's
disk, and never transcribes a chunk that changed on the way.

An episode that is diarized publishes its decoded WAV too (``publish_chunks(...,
with_audio=True)``): speaker embeddings need the whole episode, so the diarize task, wherever
it runs, reads that file (``fetch_audio``), checked against the sha256 the manifest recorded.
Episodes without diarization never upload it: it is as large as all their chunks together
(smaller, in a long episode, whose chunk WAVs also hold the 30 s after them).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.audio.chunk import CHUNKS_DIRNAME, MANIFEST_NAME, manifest_to_dict
from pipeline.core.errors import AudioError, ChecksumError, ChunkError
from pipeline.core.storage import Storage
from pipeline.core.store import check_episode_id, json_bytes
from pipeline.core.types import Chunk, ChunkManifest, DecodedAudio

AUDIO_PREFIX = "audio"  # the storage root's counterpart of the local audio root


def chunk_key(episode_id: str, chunk: Chunk) -> str:
    """Where a chunk WAV lives under the storage root (by its file name, as cut)."""
    return f"{AUDIO_PREFIX}/{check_episode_id(episode_id)}/{CHUNKS_DIRNAME}/{chunk.path.name}"


def manifest_key(episode_id: str) -> str:
    """Where an episode's chunk manifest lives under the storage root."""
    return f"{AUDIO_PREFIX}/{check_episode_id(episode_id)}/{MANIFEST_NAME}"


def audio_key(episode_id: str, audio: DecodedAudio) -> str:
    """Where an episode's decoded WAV lives under the storage root (by its file name)."""
    return f"{AUDIO_PREFIX}/{check_episode_id(episode_id)}/{audio.path.name}"


def publish_chunks(storage: Storage, manifest: ChunkManifest, with_audio: bool = False) -> int:
    """Put the chunk WAVs of ``manifest`` (with ``with_audio`` the decoded WAV too, for a
    diarize task elsewhere; then the manifest) under the storage root; returns how many
    chunks were put. Every file is put again, even when one is stored already: a stored copy
    that was damaged would otherwise fail every worker until removed by hand."""
    for chunk in manifest.chunks:
        storage.put_file(chunk_key(manifest.episode_id, chunk), chunk.path)
    if with_audio:
        storage.put_file(audio_key(manifest.episode_id, manifest.audio), manifest.audio.path)
    # the manifest last: whoever sees it can fetch every chunk it lists
    storage.put_bytes(manifest_key(manifest.episode_id), json_bytes(manifest_to_dict(manifest)))
    return len(manifest.chunks)


def fetch_chunk(storage: Storage, episode_id: str, chunk: Chunk, dest_dir: Path) -> Chunk:
    """Fetch a chunk's WAV into ``dest_dir`` and verify its sha256; returns the chunk with its
    local path there. ChunkError naming the chunk when it is missing or does not match."""
    key = chunk_key(episode_id, chunk)
    dest = Path(dest_dir) / chunk.path.name
    try:
        storage.get_verified(key, dest, chunk.sha256)
    except ChecksumError as exc:
        raise ChunkError(
            f"chunk {chunk.number} of {episode_id} changed since it was cut: {exc}"
        ) from exc
    return dataclasses.replace(chunk, path=dest)


def fetch_audio(storage: Storage, manifest: ChunkManifest, dest_dir: Path) -> ChunkManifest:
    """Fetch the episode's decoded WAV into ``dest_dir`` and verify its sha256; returns the
    manifest with the audio's local path there. AudioError naming the episode when it is not
    published, does not match, or the manifest (of an older version) records no sha256."""
    audio, episode_id = manifest.audio, manifest.episode_id
    if audio.sha256 is None:
        raise AudioError(
            f"the manifest of {episode_id} records no sha256 of its decoded audio (made by an "
            "older version): re-run the episode to cut it again"
        )
    key = audio_key(episode_id, audio)
    dest = Path(dest_dir) / audio.path.name
    try:
        storage.get_verified(key, dest, audio.sha256)
    except ChecksumError as exc:
        raise AudioError(
            f"the decoded audio of {episode_id} changed since it was cut: {exc}"
        ) from exc
    return dataclasses.replace(manifest, audio=dataclasses.replace(audio, path=dest))
