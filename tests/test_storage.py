"""Storage roots: a local folder, a file:// URL and an s3:// URL (moto's server on loopback)."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from pipeline.core.errors import ChecksumError, StorageError
from pipeline.core.storage import Storage, is_url


@pytest.fixture(params=["path", "file-url", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "path":
        return Storage(str(tmp_path / "root"))
    if request.param == "file-url":
        return Storage((tmp_path / "root").as_uri())
    return Storage(request.getfixturevalue("s3_root"))


def test_put_get_exists_and_list(storage: Storage, tmp_path: Path) -> None:
    assert not storage.exists("audio/ep/manifest.json")
    assert storage.list("audio") == []
    storage.put_bytes("audio/ep/manifest.json", b'{"a": 1}\n')
    source = tmp_path / "chunk.wav"
    source.write_bytes(os.urandom(70_000))
    storage.put_file("audio/ep/chunks/chunk-0000.wav", source)
    storage.put_bytes("transcripts/ep/score.json", b"{}")

    assert storage.exists("audio/ep/manifest.json")
    assert storage.get_bytes("audio/ep/manifest.json") == b'{"a": 1}\n'
    assert storage.list("audio") == ["audio/ep/chunks/chunk-0000.wav", "audio/ep/manifest.json"]
    assert storage.list("audio/ep/chunks/") == ["audio/ep/chunks/chunk-0000.wav"]
    copy = storage.get_file("audio/ep/chunks/chunk-0000.wav", tmp_path / "work" / "c.wav")
    assert copy.read_bytes() == source.read_bytes()

    storage.put_bytes("audio/ep/manifest.json", b"{}")  # overwritten whole
    assert storage.get_bytes("audio/ep/manifest.json") == b"{}"
    storage.delete("audio/ep/manifest.json")
    assert not storage.exists("audio/ep/manifest.json")


def test_verified_copy_and_checksum_mismatch(storage: Storage, tmp_path: Path) -> None:
    data = b"RIFF" + os.urandom(1000)
    storage.put_bytes("audio/ep/chunks/chunk-0001.wav", data)
    good = hashlib.sha256(data).hexdigest()
    dest = tmp_path / "mine" / "chunk-0001.wav"
    assert storage.get_verified("audio/ep/chunks/chunk-0001.wav", dest, good).read_bytes() == data

    # damaged in storage: the last byte flipped (a fixed b"x" equals it 1 time in 256)
    storage.put_bytes("audio/ep/chunks/chunk-0001.wav", data[:-1] + bytes([data[-1] ^ 1]))
    dest.unlink()
    with pytest.raises(ChecksumError, match=r"chunk-0001\.wav has sha256 .* expected") as info:
        storage.get_verified("audio/ep/chunks/chunk-0001.wav", dest, good)
    assert good[:12] in str(info.value) and "\n" not in str(info.value)
    assert not dest.exists(), "a copy that failed its check is never left to be used"


def test_missing_object_is_one_clear_error(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"cannot read .*nothing\.json: not found"):
        storage.get_bytes("nothing.json")
    with pytest.raises(StorageError, match="not found"):
        storage.get_file("nothing.wav", tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.parametrize(
    "key", ["", "/etc/passwd", "../escape", "a/../../b", "a/./b", "a/..", "a//b"]
)
def test_keys_cannot_leave_the_root(tmp_path: Path, key: str) -> None:
    with pytest.raises(StorageError, match="not a relative path under the root"):
        Storage(str(tmp_path)).put_bytes(key, b"x")
    assert list(tmp_path.iterdir()) == []


def test_local_write_is_atomic(tmp_path: Path) -> None:
    """A write that fails midway leaves the old object whole and no temp file behind."""
    storage = Storage(str(tmp_path / "root"))
    storage.put_bytes("transcripts/ep/transcript.json", b"old")

    class Boom(Exception):
        pass

    source = tmp_path / "big.bin"
    source.write_bytes(b"new" * 1000)
    original = storage.fs.cp_file

    def failing_copy(src: str, dst: str, **kw: object) -> None:
        Path(dst).write_bytes(b"ne")  # half written ...
        raise Boom  # ... then the process dies

    storage.fs.cp_file = failing_copy  # type: ignore[method-assign]
    try:
        with pytest.raises(Boom):
            storage.put_file("transcripts/ep/transcript.json", source)
    finally:
        storage.fs.cp_file = original  # type: ignore[method-assign]
    assert storage.get_bytes("transcripts/ep/transcript.json") == b"old"
    assert [p.name for p in (tmp_path / "root" / "transcripts" / "ep").iterdir()] == [
        "transcript.json"
    ]


def test_unknown_scheme_is_one_clear_error() -> None:
    with pytest.raises(StorageError, match="cannot open storage nosuch://x"):
        Storage("nosuch://x").exists("a")
    assert is_url("s3://b/p") and is_url("file:///tmp") and not is_url("/srv/podscribe")


def test_serve_refuses_a_storage_root_it_cannot_open(tmp_path: Path) -> None:
    """`podscribe serve --storage-url` checks the root before any server or flow starts."""
    import subprocess
    import sys

    repo = Path(__file__).resolve().parent.parent
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "serve", "--storage-url", "nosuch://bucket/x"],
        cwd=tmp_path,
        env=os.environ | {"PYTHONPATH": str(repo)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "cannot open storage nosuch://bucket/x" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results").exists()


def test_published_chunks_are_fetched_verified_by_a_worker(
    storage: Storage, tmp_path: Path, fixtures_dir: Path
) -> None:
    """The cutting machine publishes; a worker fetches into its own folder, checked; a chunk
    damaged in storage is a ChunkError naming the chunk, and publishing again repairs it."""
    from pipeline.audio.chunk import ChunkOptions, load_manifest
    from pipeline.audio.remote import chunk_key, fetch_chunk, manifest_key, publish_chunks
    from pipeline.core.errors import ChunkError
    from pipeline.episode import prepare_episode

    options = ChunkOptions(max_chunk_s=5.0, min_chunk_s=2.0, search_s=3.0)
    manifest = prepare_episode(str(fixtures_dir / "speech.ogg"), "st-1", tmp_path / "a", options)
    assert len(manifest.chunks) >= 2
    assert publish_chunks(storage, manifest) == len(manifest.chunks)
    stored = tmp_path / "stored-manifest.json"
    stored.write_bytes(storage.get_bytes(manifest_key("st-1")))
    assert load_manifest(stored) == manifest

    worker = tmp_path / "worker"
    first = manifest.chunks[0]
    local = fetch_chunk(storage, "st-1", first, worker)
    assert local.path == worker / first.path.name and local.sha256 == first.sha256
    assert local.path.read_bytes() == first.path.read_bytes()

    second = manifest.chunks[1]
    storage.put_bytes(chunk_key("st-1", second), second.path.read_bytes()[:-2] + b"\0\1")
    with pytest.raises(ChunkError, match=r"chunk 2 of st-1 changed since it was cut: .*sha256"):
        fetch_chunk(storage, "st-1", second, worker)
    assert not (worker / second.path.name).exists()
    publish_chunks(storage, manifest)
    assert fetch_chunk(storage, "st-1", second, worker).path.is_file()


def test_published_decoded_audio_is_fetched_verified_for_diarization(
    storage: Storage, tmp_path: Path, fixtures_dir: Path
) -> None:
    """An episode that is diarized publishes its decoded WAV too; a diarize task on a machine
    without it fetches it into its own folder, checked against the manifest's sha256; one
    damaged in storage is an AudioError naming the episode and the object."""
    from pipeline.audio.chunk import ChunkOptions
    from pipeline.audio.remote import audio_key, fetch_audio, publish_chunks
    from pipeline.core.errors import AudioError
    from pipeline.episode import prepare_episode

    options = ChunkOptions(max_chunk_s=5.0, min_chunk_s=2.0, search_s=3.0)
    manifest = prepare_episode(str(fixtures_dir / "speech.ogg"), "st-2", tmp_path / "a", options)
    key = audio_key("st-2", manifest.audio)
    publish_chunks(storage, manifest)
    assert not storage.exists(key), "no decoded WAV without diarization"
    publish_chunks(storage, manifest, with_audio=True)
    assert storage.exists(key)

    worker = tmp_path / "worker"
    local = fetch_audio(storage, manifest, worker)
    assert local.audio.path == worker / manifest.audio.path.name
    assert local.audio.path.read_bytes() == manifest.audio.path.read_bytes()
    assert local.chunks == manifest.chunks and local.audio.sha256 == manifest.audio.sha256

    local.audio.path.unlink()
    storage.put_bytes(key, manifest.audio.path.read_bytes()[:-2] + b"\0\1")
    with pytest.raises(
        AudioError, match=r"decoded audio of st-2 changed since it was cut: .*sha256"
    ):
        fetch_audio(storage, manifest, worker)
    assert not local.audio.path.exists()
    old = manifest.__class__(
        manifest.episode_id, dataclasses.replace(manifest.audio, sha256=None), manifest.chunks, {}
    )
    with pytest.raises(AudioError, match="records no sha256 .* re-run the episode"):
        fetch_audio(storage, old, worker)
