"""The faster-whisper backend (pipeline/backend_ct2.py) behind TranscribeOptions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.errors import OptionsError
from pipeline.transcribe import TranscribeOptions

FIXTURES = Path(__file__).parent / "fixtures"


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def test_backend_option_validated() -> None:
    assert TranscribeOptions().backend == "openai-whisper"
    assert TranscribeOptions(backend="faster-whisper").to_dict()["backend"] == "faster-whisper"
    with pytest.raises(OptionsError, match="backend"):
        TranscribeOptions(backend="whisper.cpp")


@pytest.mark.slow
def test_transcribes_chunks_in_episode_time(tmp_path: Path) -> None:
    from pipeline.audio import decode_audio
    from pipeline.chunk import ChunkOptions, chunk_audio
    from pipeline.transcribe import transcribe_chunks

    decoded = decode_audio(FIXTURES / "episode.mp3", tmp_path / "a.wav")
    options_c = ChunkOptions(max_chunk_s=12.0)
    manifest = chunk_audio(decoded, tmp_path / "chunks", "fixture", options_c)
    options = TranscribeOptions(backend="faster-whisper", batch_size=4)
    results = transcribe_chunks(manifest.chunks, options)
    assert [r.chunk_index for r in results] == [c.index for c in manifest.chunks]
    text = " ".join(r.text for r in results)
    ref = _words((FIXTURES / "episode.txt").read_text())
    assert len(_words(text) & ref) >= 0.7 * len(ref)
    for chunk, r in zip(manifest.chunks, results, strict=True):
        assert r.model.sha256 and "faster-whisper" in r.model.source
        assert r.options["backend"] == "faster-whisper"
        for seg in r.segments:
            assert chunk.start_s - 1e-3 <= seg.start <= seg.end <= chunk.end_s + 1e-3
    assert any(seg.start > 1.0 for r in results[1:] for seg in r.segments)


@pytest.mark.slow
def test_cli_backend_faster_whisper_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    result = CliRunner().invoke(
        app,
        [
            "transcribe",
            str(FIXTURES / "speech.ogg"),
            "--reference",
            str(FIXTURES / "speech.txt"),
            "--backend",
            "faster-whisper",
            "--max-chunk-s",
            "12",
            "--transcripts-root",
            str(tmp_path / "t"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["wer"] < 0.3
    transcript = json.loads((Path(summary["out"]) / "transcript.json").read_text())
    assert transcript["provenance"]["transcribe_options"]["backend"] == "faster-whisper"
    assert "faster-whisper" in transcript["provenance"]["models"][0]["source"]
