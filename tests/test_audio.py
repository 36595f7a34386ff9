"""decode_audio / read_wav_samples on audio made here with ffmpeg, the fixtures, and bad inputs."""

from __future__ import annotations

import re
import subprocess
import wave
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from pipeline.audio.decode import decode_audio, find_ffmpeg, read_wav_samples
from pipeline.core.errors import AudioError
from pipeline.core.types import SAMPLE_RATE

TOLERANCE_S = 0.050
TONE = "sine=frequency=440:duration=3"  # lavfi's sine has amplitude 1/8

# (file name, ffmpeg output arguments) for a 3 s tone in each format users feed us.
FORMATS = [
    ("tone.mp3", ["-c:a", "libmp3lame", "-b:a", "64k"]),
    ("tone.ogg", ["-c:a", "libvorbis"]),
    ("tone.opus", ["-c:a", "libopus"]),
    ("tone.flac", ["-c:a", "flac"]),
    ("tone.m4a", ["-c:a", "aac"]),
    ("tone.wav", ["-ac", "2", "-ar", "44100"]),  # stereo 44.1 kHz: downmixed and resampled
]


def probe_duration_s(ffmpeg_exe: str, path: Path) -> float:
    """The container's duration as ffmpeg reports it (ffprobe may be missing).

    Less the stream's start time: an mp3 starts after the encoder delay, which decoding drops.
    """
    err = subprocess.run([ffmpeg_exe, "-hide_banner", "-i", str(path)], capture_output=True).stderr
    found = re.search(rb"Duration: (\d+):(\d+):([\d.]+), start: ([\d.]+)", err)
    h, m, s, start = found.groups()
    return int(h) * 3600 + int(m) * 60 + float(s) - float(start)


@pytest.mark.parametrize(("name", "args"), FORMATS, ids=[f[0] for f in FORMATS])
def test_decodes_each_format_to_16k_mono(tmp_path, run_ffmpeg, name, args):
    src = run_ffmpeg("-f", "lavfi", "-i", TONE, *args, tmp_path / name)
    decoded = decode_audio(src, tmp_path / "out.wav")
    assert decoded.duration_s == pytest.approx(3.0, abs=TOLERANCE_S)
    with wave.open(str(decoded.path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE, 1, 2)
        assert w.getnframes() == decoded.num_samples
    peak = np.abs(read_wav_samples(decoded.path)).max()
    assert 0.05 < peak < 0.2  # the tone survived (1/8 amplitude; -3 dB when downmixed)


def test_decodes_audio_track_of_a_video(tmp_path, run_ffmpeg):
    video = run_ffmpeg(
        *("-f", "lavfi", "-i", "testsrc=duration=3:size=64x48:rate=10"),
        *("-f", "lavfi", "-i", TONE),
        *("-c:v", "mpeg4", "-c:a", "aac", "-shortest"),
        tmp_path / "clip.mp4",
    )
    decoded = decode_audio(video, tmp_path / "out.wav")
    assert decoded.duration_s == pytest.approx(3.0, abs=TOLERANCE_S)


@pytest.mark.parametrize(("name", "seconds"), [("speech.ogg", 7.0), ("episode.mp3", 48.0)])
def test_committed_fixtures(tmp_path, fixtures_dir, ffmpeg_exe, name, seconds):
    src = fixtures_dir / name
    decoded = decode_audio(src, tmp_path / "out.wav")
    assert decoded.duration_s == pytest.approx(probe_duration_s(ffmpeg_exe, src), abs=TOLERANCE_S)
    assert decoded.duration_s == pytest.approx(seconds, abs=1.0)
    samples = read_wav_samples(decoded.path)
    assert samples.dtype == np.float32 and len(samples) == decoded.num_samples
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    assert np.abs(samples).max() > 0.05  # speech, not silence


def test_reuses_decoded_wav_for_same_source(tmp_path, run_ffmpeg):
    src = run_ffmpeg("-f", "lavfi", "-i", TONE, tmp_path / "tone.flac")
    first = decode_audio(src, tmp_path / "out.wav")
    stamp = first.path.stat().st_mtime_ns
    second = decode_audio(src, tmp_path / "out.wav")
    assert second == first
    assert second.path.stat().st_mtime_ns == stamp  # not decoded again


def test_redecodes_when_source_changes(tmp_path, run_ffmpeg):
    src = run_ffmpeg("-f", "lavfi", "-i", TONE, tmp_path / "tone.flac")
    first = decode_audio(src, tmp_path / "out.wav")
    run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=2", src)
    second = decode_audio(src, tmp_path / "out.wav")
    assert second.source_sha256 != first.source_sha256
    assert second.duration_s == pytest.approx(2.0, abs=TOLERANCE_S)


def test_read_wav_samples_reads_a_range(tmp_path, run_ffmpeg):
    src = run_ffmpeg("-f", "lavfi", "-i", TONE, tmp_path / "tone.wav")
    decoded = decode_audio(src, tmp_path / "out.wav")
    everything = read_wav_samples(decoded.path)
    part = read_wav_samples(decoded.path, 1000, 5000)
    assert part.dtype == np.float32
    np.testing.assert_array_equal(part, everything[1000:5000])
    assert len(read_wav_samples(decoded.path, 7, 7)) == 0
    with pytest.raises(AudioError, match="outside"):
        read_wav_samples(decoded.path, 0, decoded.num_samples + 1)


def _make_bad_input(case: str, tmp_path: Path, run_ffmpeg) -> Path:
    """One of the bad inputs users really give us, made fresh in ``tmp_path``."""
    if case == "missing":
        return tmp_path / "nope.mp3"
    if case == "empty":
        (tmp_path / "empty.mp3").write_bytes(b"")
        return tmp_path / "empty.mp3"
    if case == "html":
        html = tmp_path / "episode.mp3"
        html.write_text("<!DOCTYPE html><html><body>Not found</body></html>\n")
        return html
    if case == "truncated":
        m4a = run_ffmpeg("-f", "lavfi", "-i", TONE, "-c:a", "aac", tmp_path / "whole.m4a")
        truncated = tmp_path / "truncated.m4a"
        truncated.write_bytes(m4a.read_bytes()[: m4a.stat().st_size // 2])  # moov is at the end
        return truncated
    if case == "garbage":
        (tmp_path / "noise.mp3").write_bytes(bytes(range(256)) * 40)
        return tmp_path / "noise.mp3"
    if case == "video_only":
        return run_ffmpeg(
            "-f", "lavfi", "-i", "testsrc=duration=1:size=64x48:rate=10", "-c:v", "mpeg4",
            tmp_path / "silent-film.mp4",
        )  # fmt: skip
    assert case == "zero_samples"
    return run_ffmpeg("-f", "lavfi", "-i", "anullsrc", "-t", "0", tmp_path / "zero.wav")


BAD_CASES = [
    ("missing", r"nope\.mp3: file not found"),
    ("empty", r"empty\.mp3: file is empty \(0 bytes\)"),
    ("html", r"episode\.mp3: it is an HTML/text page, not audio"),
    ("truncated", r"cannot decode .*truncated\.m4a: .+ — is it an audio file\?"),
    ("garbage", r"cannot decode .*noise\.mp3: .+ — is it an audio file\?"),
    ("video_only", r"silent-film\.mp4 contains no audio"),
    ("zero_samples", r"zero\.wav contains no audio"),
]


@pytest.mark.parametrize(("case", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_inputs_give_one_line_errors_and_keep_old_output(tmp_path, run_ffmpeg, case, message):
    good = run_ffmpeg("-f", "lavfi", "-i", TONE, tmp_path / "good.wav")
    out = tmp_path / "out.wav"
    decode_audio(good, out)
    before = out.read_bytes()
    bad = _make_bad_input(case, tmp_path, run_ffmpeg)
    with pytest.raises(AudioError, match=message) as info:
        decode_audio(bad, out)
    assert "\n" not in str(info.value)
    assert out.read_bytes() == before  # the earlier good decode was not touched
    assert sorted(p.name for p in tmp_path.glob(".out.wav*")) == []  # no temp files left


def test_falls_back_to_imageio_ffmpeg_without_ffmpeg_on_path(tmp_path, run_ffmpeg, monkeypatch):
    src = run_ffmpeg("-f", "lavfi", "-i", TONE, "-c:a", "libmp3lame", tmp_path / "tone.mp3")
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()
    decoded = decode_audio(src, tmp_path / "out.wav")
    assert decoded.duration_s == pytest.approx(3.0, abs=TOLERANCE_S)
