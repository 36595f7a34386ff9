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


def test_decoded_audio_records_its_sha256_and_diarization_checks_it(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    """The manifest records the decoded WAV's sha256; diarize_episode refuses a WAV changed
    since (one line naming the file, saying to Retry) before reading any of it; decoding
    again repairs it (a Retry's prepare step), to the same bytes."""
    import json

    from pipeline.audio.chunk import MANIFEST_NAME, load_manifest
    from pipeline.audio.decode import verify_decoded
    from pipeline.audio.diarize import DiarizeOptions
    from pipeline.core.errors import AudioError
    from pipeline.core.store import sha256_file
    from pipeline.episode import diarize_episode

    wav = tmp_path / "audio.wav"
    decoded = decode_audio(fixtures_dir / "speech.ogg", wav)
    assert decoded.sha256 == sha256_file(wav)
    manifest = chunk_audio(
        decoded, tmp_path, "ep-1", ChunkOptions(max_chunk_s=5, min_chunk_s=1, search_s=2)
    )
    assert load_manifest(tmp_path / MANIFEST_NAME).audio.sha256 == decoded.sha256
    assert verify_decoded(decoded, "ep-1") is decoded

    original = wav.read_bytes()
    wav.write_bytes(original[:-10] + b"\x01" * 10)
    with pytest.raises(AudioError, match=r"decoded audio of ep-1 changed since it was cut") as e:
        diarize_episode(manifest, DiarizeOptions(speakers=1))
    assert str(wav) in str(e.value) and "Retry" in str(e.value) and "\n" not in str(e.value)
    again = decode_audio(fixtures_dir / "speech.ogg", wav)  # the sidecar's hash: not reused
    assert again == decoded and wav.read_bytes() == original
    wav.unlink()
    with pytest.raises(AudioError, match=r"decoded audio of ep-1 cannot be read"):
        verify_decoded(decoded, "ep-1")

    # A manifest written before the hash was recorded still loads (nothing to check against).
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    del data["audio"]["sha256"]
    (tmp_path / "old.json").write_text(json.dumps(data))
    old = load_manifest(tmp_path / "old.json")
    assert old.audio.sha256 is None and verify_decoded(old.audio) is old.audio
