"""The faster-whisper backend (pipeline/asr/ct2.py) behind TranscribeOptions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.asr.options import TranscribeOptions
from pipeline.core.errors import OptionsError

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
    from pipeline.asr.transcribe import transcribe_chunks
    from pipeline.audio.chunk import ChunkOptions, chunk_audio
    from pipeline.audio.decode import decode_audio

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

    from pipeline.cli.app import app

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
            "--no-continue-in-window",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output.strip().splitlines()[-1])
    assert summary["wer"] < 0.3
    transcript = json.loads((Path(summary["out"]) / "transcript.json").read_text())
    assert transcript["provenance"]["transcribe_options"]["backend"] == "faster-whisper"
    assert transcript["provenance"]["transcribe_options"]["continue_in_window"] is False
    assert "faster-whisper" in transcript["provenance"]["models"][0]["source"]


@pytest.mark.slow
def test_a_window_goes_on_in_place_after_an_early_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Speech, 8 s of silence, speech: the first window stops on a "continue from here" pair
    # before the second part. Without continuing that part needs a window of its own; with it
    # (the default) it is decoded in the same window, from the encoder output already made.
    import wave

    import numpy as np

    import pipeline.asr.ct2 as ct2
    from pipeline.audio.decode import decode_audio, read_wav_samples
    from pipeline.core.store import sha256_file
    from pipeline.core.types import SAMPLE_RATE, Chunk

    episode = read_wav_samples(decode_audio(FIXTURES / "episode.mp3", tmp_path / "e.wav").path)
    first, second = episode[10 * SAMPLE_RATE : 20 * SAMPLE_RATE], episode[20 * SAMPLE_RATE :]
    silence = np.zeros(8 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([first, silence, second[: 10 * SAMPLE_RATE]])
    path = tmp_path / "gap.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
    chunk = Chunk(0, 0, len(audio), path, sha256_file(path), "end")

    windows: list[float] = []
    features = ct2._features

    def counted(model, samples):
        windows.append(len(samples) / SAMPLE_RATE)
        return features(model, samples)

    monkeypatch.setattr(ct2, "_features", counted)
    texts, counts = {}, {}
    for cont in (False, True):
        windows.clear()
        options = TranscribeOptions(backend="faster-whisper", continue_in_window=cont)
        [result] = ct2.transcribe_chunks_ct2([chunk], options)
        texts[cont], counts[cont] = result.text, len(windows)
        assert max(s.end for s in result.segments) > 26.0  # decoded up to the chunk's end
    assert counts == {False: 2, True: 1}
    for text in texts.values():
        assert {"surprised", "stream", "storm", "worry", "plan"} <= _words(text)


def test_continuation_token_helpers() -> None:
    from pipeline.asr.ct2 import _first_segment, _last_segment

    tb = 50363  # tiny.en's first timestamp token; text tokens lie below it
    tokens = [tb, 10, 11, tb + 100, tb + 100, 12, 13, tb + 250]
    assert _last_segment(tokens, tb) == [tb + 100, 12, 13, tb + 250]
    assert _last_segment([tb, 10, tb + 5], tb) == [tb, 10, tb + 5]
    # A continuation: the next segment's start, its text, its end, then what came after.
    assert _first_segment([tb + 260, 14, 15, tb + 300, tb + 300, 16], tb) == [
        tb + 260,
        14,
        15,
        tb + 300,
    ]
    assert _first_segment([tb + 260, 14, 15], tb) is None  # never closed


@pytest.mark.slow
def test_a_long_episodes_chunk_is_decoded_to_its_end(tmp_path: Path) -> None:
    # A chunk of several 30 s windows (ChunkOptions.long_chunk_s) whose first window holds no
    # speech: the chunk goes on in its next windows (it used to end there, its speech lost).
    import wave

    from pipeline.asr.transcribe import transcribe_chunks
    from pipeline.audio.chunk import ChunkOptions, chunk_audio
    from pipeline.audio.decode import decode_audio

    once = decode_audio(FIXTURES / "episode.mp3", tmp_path / "e.wav").path
    with wave.open(str(once), "rb") as w:
        params, pcm = w.getparams(), w.readframes(w.getnframes())
    with wave.open(str(tmp_path / "late.wav"), "wb") as w:
        w.setparams(params)
        w.writeframes(bytes(2 * 16000 * 35) + pcm + bytes(2 * 16000 * 10))  # 35 s of silence first
    decoded = decode_audio(tmp_path / "late.wav", tmp_path / "a.wav")
    options_c = ChunkOptions(long_chunk_s=90.0, min_chunks=1)
    manifest = chunk_audio(decoded, tmp_path / "chunks", "fixture", options_c)
    assert manifest.chunks[0].duration_s > 80.0
    options = TranscribeOptions(backend="faster-whisper", batch_size=4)
    first = transcribe_chunks(manifest.chunks[:1], options)[0]
    assert any(seg.start > 35.0 for seg in first.segments)
    ref = _words((FIXTURES / "episode.txt").read_text())
    assert len(_words(first.text) & ref) >= 0.8 * len(ref)
