"""verify_chunk: a chunk WAV changed since it was cut fails with a message naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.audio.chunk import ChunkOptions, chunk_audio, verify_chunk
from pipeline.audio.decode import decode_audio
from pipeline.core.errors import ChunkError


def test_verify_chunk_passes_intact_and_names_changed_chunk(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    decoded = decode_audio(fixtures_dir / "speech.ogg", tmp_path / "audio.wav")
    manifest = chunk_audio(
        decoded, tmp_path, "ep-1", ChunkOptions(max_chunk_s=5, min_chunk_s=1, search_s=2)
    )
    first = manifest.chunks[0]
    assert verify_chunk(first, "ep-1") is first
    original = first.path.read_bytes()
    first.path.write_bytes(original[:-10] + b"\x01" * 10)  # same size, other samples
    with pytest.raises(ChunkError, match=r"chunk 1 of ep-1 changed since it was cut \(sha256"):
        verify_chunk(first, "ep-1")
    first.path.unlink()
    with pytest.raises(ChunkError, match="chunk 1 of ep-1 cannot be read"):
        verify_chunk(first, "ep-1")
