"""Reference-free signals and flags on audio made here with ffmpeg, and the one-retry repair."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio.analysis import classify_windows, speech_end_s
from pipeline.audio.decode import decode_audio, read_wav_samples, wav_num_samples
from pipeline.core.errors import OptionsError
from pipeline.core.types import Chunk, ChunkTranscript, ModelInfo, Segment, to_dict
from pipeline.quality.signals import (
    QualityThresholds,
    assess_chunk,
    assess_chunks,
    chunk_signals,
    flag_chunk,
    quality_report_from_dict,
    repeated_ngram,
    text_compression_ratio,
)

MODEL = ModelInfo(name="tiny.en", sha256="0" * 64, source="test data", path=Path("tiny.en.pt"))
SPEECH_TEXT = (
    "The quick brown fox jumps over the lazy dog. Podcasts are easy to listen to on a long walk."
)


@pytest.fixture(scope="module")
def audio(tmp_path_factory, run_ffmpeg, fixtures_dir) -> dict[str, Path]:
    """16 kHz mono WAVs: tone, silence, a tremolo chord, white noise, and espeak speech twice."""
    d = tmp_path_factory.mktemp("quality")
    lavfi = {
        "tone": "sine=frequency=440:duration=8:sample_rate=16000",
        "silence": "anullsrc=r=16000:cl=mono:d=8",
        "chord": "aevalsrc='0.15*(0.6+0.4*sin(2*PI*4*t))*(sin(2*PI*220*t)+sin(2*PI*277.18*t)"
        "+sin(2*PI*329.63*t))':s=16000:d=8",
        "noise": "anoisesrc=d=8:c=white:r=16000:a=0.05",
    }
    out = {}
    for name, src in lavfi.items():
        raw = run_ffmpeg("-f", "lavfi", "-i", src, "-ac", "1", d / f"{name}.flac")
        out[name] = decode_audio(raw, d / f"{name}.wav").path
    # The 6 s fixture said twice: long enough that dropping all of it passes the 5 s floor.
    twice = run_ffmpeg("-stream_loop", "1", "-i", fixtures_dir / "speech.ogg", d / "speech2.flac")
    out["speech"] = decode_audio(twice, d / "speech.wav").path
    return out


def _chunk(path: Path, index: int = 0, start_sample: int = 0) -> Chunk:
    n = wav_num_samples(path)
    return Chunk(index, start_sample, start_sample + n, path, f"{index}" * 64, "end")


def _transcript(chunk: Chunk, *segments: Segment) -> ChunkTranscript:
    return ChunkTranscript(
        chunk_index=chunk.index,
        chunk_sha256=chunk.sha256,
        start_s=chunk.start_s,
        end_s=chunk.end_s,
        segments=tuple(segments),
        model=MODEL,
        options={},
        elapsed_s=0.1,
    )


def _seg(chunk: Chunk, start: float, end: float, text: str, logprob: float = -0.3) -> Segment:
    return Segment(chunk.start_s + start, chunk.start_s + end, text, chunk.index, logprob, 0.05)


# --- audio windows --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected", "share"),
    [
        ("tone", "music", 1.0),
        ("chord", "music", 1.0),
        ("silence", "silence", 1.0),
        ("noise", "noise", 1.0),
        ("speech", "speech", 0.7),  # the pauses between sentences may be silence
    ],
)
def test_window_classes(audio, name: str, expected: str, share: float) -> None:
    windows = classify_windows(read_wav_samples(audio[name]))
    assert len(windows.classes) == 16 if name != "speech" else len(windows.classes) > 20
    assert windows.classes.count(expected) / len(windows.classes) >= share
    if name == "speech":
        assert "music" not in windows.classes and "noise" not in windows.classes


def test_speech_end_is_where_the_last_speech_stops(audio) -> None:
    speech, chord = read_wav_samples(audio["speech"]), read_wav_samples(audio["chord"])
    duration = len(speech) / 16000
    end = speech_end_s(speech)
    assert duration - 1.5 <= end <= duration
    # Music after the speech is sound, not speech: the end stays where the words stop.
    assert speech_end_s(np.concatenate([speech, chord])) == pytest.approx(end, abs=0.5)
    assert speech_end_s(np.concatenate([chord, speech])) > len(chord) / 16000 + duration - 1.5
    for name in ("tone", "chord", "silence", "noise"):
        assert speech_end_s(read_wav_samples(audio[name])) == 0.0, name
    assert speech_end_s(np.zeros(0, dtype=np.float32)) == 0.0


def test_window_times_are_in_episode_time(audio) -> None:
    windows = classify_windows(read_wav_samples(audio["tone"]), start_s=100.0)
    assert windows.center(0) == pytest.approx(100.25)
    assert windows.seconds("music") == pytest.approx(8.0)


# --- text signals -----------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 1023, 1024, 1025, 1024 + 160, 16000 * 7 + 13])
def test_frame_levels_equal_each_frames_own_mean_square(n: int) -> None:
    from pipeline.audio.analysis import FRAME_N, _frames, _levels

    rng = np.random.default_rng(n)
    samples = (rng.standard_normal(n) * rng.uniform(0.001, 0.5, n)).astype(np.float32)
    samples[: n // 3] = 0.0  # digital silence too
    frames = _frames(samples).astype(np.float64)
    direct = 10 * np.log10((frames**2).sum(axis=1) / FRAME_N + 1e-12)
    levels = _levels(samples)
    assert levels.shape == direct.shape
    np.testing.assert_allclose(levels, direct, atol=1e-4)


def test_repeated_ngram() -> None:
    words = ("i am going to go " * 3 + "i am going").split(" ")
    assert repeated_ngram(words) == ("i am going", 4)
    assert repeated_ngram(list("abcdef")) == ("", 0)
    assert repeated_ngram([]) == ("", 0)


def test_text_compression_ratio() -> None:
    assert text_compression_ratio("") == 0.0
    assert text_compression_ratio(SPEECH_TEXT) < 1.5
    assert text_compression_ratio("Thank you. " * 20) > 2.4


# --- flags ------------------------------------------------------------------------------------


def test_clean_speech_raises_no_flag(audio) -> None:
    chunk = _chunk(audio["speech"])
    half = chunk.duration_s / 2  # the fixture said twice: one segment per saying
    ct = _transcript(
        chunk, _seg(chunk, 0.0, half, SPEECH_TEXT), _seg(chunk, half, 2 * half, SPEECH_TEXT)
    )
    signals, flags = assess_chunk(chunk, ct)
    assert flags.names == () and flags.reasons == ()
    assert signals.words == 38
    assert signals.uncovered_sound_s == 0.0
    assert signals.words_over_nonspeech == 0
    assert 2.0 < signals.words_per_s < 5.0
    assert signals.avg_logprob == pytest.approx(-0.3)


@pytest.mark.parametrize("name", ["tone", "silence", "chord"])
def test_text_over_non_speech_is_hallucination(audio, name: str) -> None:
    chunk = _chunk(audio[name])
    ct = _transcript(chunk, _seg(chunk, 0.5, 4.0, "Thank you for watching."))
    signals, flags = assess_chunk(chunk, ct)
    assert flags.hallucination and not flags.dropped_speech
    assert signals.words_over_nonspeech == 4
    assert flags.reasons[0].startswith("hallucination: 4 words where the audio holds no speech")


def test_speech_without_text_is_dropped_speech(audio) -> None:
    chunk = _chunk(audio["speech"])
    signals, flags = assess_chunk(chunk, _transcript(chunk))
    assert flags.names == ("dropped_speech",)
    assert signals.uncovered_sound_s >= 9.0 and signals.uncovered_music_s == 0.0
    # Half the speech transcribed: the other half (6 s) is still dropped.
    half = _transcript(chunk, _seg(chunk, 0.0, 5.5, SPEECH_TEXT))
    assert assess_chunk(chunk, half)[1].dropped_speech


def test_music_without_text_is_flagged_as_untranscribed_sound(audio) -> None:
    # Speech-band sound with no text: the dropped-speech flag fires, with the music share named.
    chunk = _chunk(audio["chord"])
    signals, flags = assess_chunk(chunk, _transcript(chunk))
    assert flags.names == ("dropped_speech",)
    assert signals.uncovered_music_s == signals.uncovered_sound_s == 8.0
    assert "8.0 s of it music-like" in flags.reasons[0]


def test_silence_and_noise_without_text_raise_nothing(audio) -> None:
    for name in ("silence", "noise"):
        chunk = _chunk(audio[name])
        assert assess_chunk(chunk, _transcript(chunk))[1].names == ()


def test_repetition_loop_is_hallucination(audio) -> None:
    chunk = _chunk(audio["speech"])
    loop = "I am going to go. " * 6
    _, flags = assess_chunk(chunk, _transcript(chunk, _seg(chunk, 0.0, 12.0, loop)))
    assert flags.hallucination
    assert any("loop, 'i am going' said 6 times" in r for r in flags.reasons)


def test_low_confidence(audio) -> None:
    chunk = _chunk(audio["speech"])
    ct = _transcript(chunk, _seg(chunk, 0.0, 12.0, SPEECH_TEXT + " " + SPEECH_TEXT, -1.4))
    _, flags = assess_chunk(chunk, ct)
    assert flags.names == ("low_confidence",)


def test_jingle_before_speech_is_not_flagged(audio, tmp_path, run_ffmpeg) -> None:
    # 3 s of chord, then speech: one segment may span both (Whisper's times are rough), or
    # start with the speech; neither is a flag.
    wav = run_ffmpeg(
        "-i", audio["chord"], "-i", audio["speech"], "-filter_complex",
        "[0:a]atrim=0:3[j];[j][1:a]concat=n=2:v=0:a=1", "-ar", "16000", "-ac", "1",
        tmp_path / "jingle.wav",
    )  # fmt: skip
    chunk = _chunk(wav)
    for first in (0.0, 3.0):
        ct = _transcript(
            chunk, _seg(chunk, first, 9.0, SPEECH_TEXT), _seg(chunk, 9.0, 15.0, SPEECH_TEXT)
        )
        assert assess_chunk(chunk, ct)[1].names == ()


def test_chunk_offsets_shift_windows(audio) -> None:
    # The same audio as chunk 3 at 60 s: segment times are episode times.
    chunk = _chunk(audio["tone"], index=3, start_sample=60 * 16000)
    ct = _transcript(chunk, _seg(chunk, 1.0, 5.0, "words over a tone"))
    signals, flags = assess_chunk(chunk, ct)
    assert signals.chunk_index == 3 and signals.start_s == 60.0
    assert flags.hallucination


def test_thresholds_are_validated() -> None:
    with pytest.raises(OptionsError, match="music_similarity"):
        QualityThresholds(music_similarity=1.5)
    with pytest.raises(OptionsError, match="avg_logprob"):
        QualityThresholds(avg_logprob=0.5)


def test_report_round_trips_through_json(audio) -> None:
    tone, speech = _chunk(audio["tone"], 0), _chunk(audio["speech"], 1, 8 * 16000)
    cts = [
        _transcript(tone, _seg(tone, 0.0, 4.0, "Thank you for watching.")),
        _transcript(speech, _seg(speech, 0.0, 12.0, SPEECH_TEXT)),
    ]
    report = assess_chunks("ep", [tone, speech], cts)
    assert [f.names for f in report.flags] == [("hallucination",), ()]
    assert report.flagged() == (report.flags[0],)
    assert quality_report_from_dict(json.loads(json.dumps(to_dict(report)))) == report


def test_signals_from_windows_alone() -> None:
    # chunk_signals needs no audio file: windows can be given directly.
    from pipeline.audio.analysis import WindowClasses

    windows = WindowClasses(0.0, ("speech",) * 20)
    chunk = Chunk(0, 0, 160000, Path("none.wav"), "0" * 64, "end")
    signals = chunk_signals(_transcript(chunk), windows)
    assert (signals.speech_s, signals.uncovered_sound_s, signals.words) == (10.0, 10.0, 0)
    assert flag_chunk(signals).names == ("dropped_speech",)


def test_a_long_chunk_is_judged_for_loops_per_window() -> None:
    """A 90 s chunk (a long episode's) saying "a lot of" three times in each of its windows
    is talk, not a loop; six times inside one window is a loop, wherever it is in the chunk.
    (A window's segments share its avg_logprob: Whisper reports it per window.)"""
    from pipeline.audio.analysis import WindowClasses

    windows = WindowClasses(0.0, ("speech",) * 180)
    chunk = Chunk(0, 0, 90 * 16000, Path("none.wav"), "0" * 64, "silence")
    talk = "We have a lot of users, a lot of growth and a lot of work ahead, said the team."
    calm = [_seg(chunk, 30.0 * k + 2.0, 30.0 * k + 12.0, talk, -0.3 - k / 100) for k in range(3)]
    signals = chunk_signals(_transcript(chunk, *calm), windows)
    assert signals.top_ngram_count == 3  # nine in the chunk, three per window
    assert not flag_chunk(signals).hallucination
    loop = _seg(chunk, 62.0, 70.0, "I am going to go. " * 6, -0.5)
    signals = chunk_signals(_transcript(chunk, *calm, loop), windows)
    assert (signals.top_ngram, signals.top_ngram_count) == ("i am going", 6)
    assert flag_chunk(signals).hallucination
    # A window that starts 20 s in and loops across 30 s from the chunk's start: still whole.
    across = [_seg(chunk, 26.5 + 1.2 * k, 27.6 + 1.2 * k, "I am going to go.") for k in range(6)]
    signals = chunk_signals(_transcript(chunk, *across), windows)
    assert signals.top_ngram_count == 6 and flag_chunk(signals).hallucination


def test_a_window_inside_a_long_chunk_may_end_where_whisper_ends_it() -> None:
    """continue_limit: in a chunk of one window, no "continue from here" stop before its
    speech ends; in a chunk of several windows (a long episode's), none is forbidden."""
    from pipeline.asr.options import CONTINUE_SPEECH_AHEAD_S, TIMESTAMP_S, continue_limit

    last = continue_limit(speech_end_s=22.0, window_start_s=6.0, window_s=24.0, chunk_s=30.0)
    assert last == int((22.0 - 6.0 - CONTINUE_SPEECH_AHEAD_S) / TIMESTAMP_S)
    assert continue_limit(speech_end_s=80.0, window_start_s=28.0, window_s=30.0, chunk_s=90.0) == 0
    assert continue_limit(speech_end_s=80.0, window_start_s=60.0, window_s=30.0, chunk_s=90.0) == 0
    # Speech that ends a few samples past the window's whole 10 ms frames: still held.
    edge = continue_limit(speech_end_s=29.99594, window_start_s=0.0, window_s=29.99, chunk_s=29.99)
    assert edge == int((29.99 - CONTINUE_SPEECH_AHEAD_S) / TIMESTAMP_S)


# --- repair (real model) -----------------------------------------------------------------------


@pytest.mark.slow
def test_repair_transcribes_a_dropped_chunk_again(fixtures_dir, tmp_path) -> None:
    from pipeline.asr.options import TranscribeOptions
    from pipeline.core.types import ChunkManifest, DecodedAudio
    from pipeline.quality.repair import RepairPolicy, repair_chunks
    from pipeline.quality.score import normalize_text

    wav = decode_audio(fixtures_dir / "speech.ogg", tmp_path / "speech.wav").path
    chunk = _chunk(wav)
    manifest = ChunkManifest("ep", DecodedAudio(wav, chunk.end_sample, "0" * 64), (chunk,), {})
    empty = _transcript(chunk)  # a first pass that lost everything
    options = TranscribeOptions(model="tiny.en", device="cpu")
    t = QualityThresholds(dropped_sound_s=3.0)  # the fixture is 6 s: a lower floor
    kept, report = repair_chunks(manifest, [empty], options, policy=RepairPolicy(), thresholds=t)
    (repair,) = report.repairs
    assert repair.flags_before == ("dropped_speech",) and repair.kept == "retry"
    assert repair.flags_after == () and report.flags[0].names == ()
    assert repair.policy["beam_size"] == 5 and repair.policy["no_speech_threshold"] is None
    assert repair.after.words > 12
    assert "easy to listen to on a long walk" in normalize_text(kept[0].text)
    # Disabled: flagged, not retried.
    kept, report = repair_chunks(
        manifest, [empty], options, policy=RepairPolicy(enabled=False), thresholds=t
    )
    assert kept == [empty] and report.repairs == () and report.flags[0].dropped_speech
