"""chunk_audio: properties of the cut (tiling, lengths, cuts in silences) on ffmpeg-made audio."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio.chunk import ChunkOptions, chunk_audio, find_cut, load_manifest
from pipeline.audio.decode import decode_audio, read_chunk_samples, read_wav_pcm, read_wav_samples
from pipeline.core.errors import OptionsError
from pipeline.core.types import SAMPLE_RATE, ChunkManifest

TOLERANCE_S = 0.050
# Tone with a 0.6 s pause every 7 s (starting at 5 s): every 10 s search region holds a whole one.
PAUSE_EVERY_S, PAUSE_LEN_S, FIRST_PAUSE_S = 7.0, 0.6, 5.0
TONE_S = 100.0


def pauses(total_s: float) -> list[tuple[float, float]]:
    """(start, end) seconds of the pauses in the paused tone."""
    starts = np.arange(FIRST_PAUSE_S, total_s - PAUSE_LEN_S, PAUSE_EVERY_S)
    return [(float(s), float(s) + PAUSE_LEN_S) for s in starts]


@pytest.fixture(scope="module")
def paused_tone(tmp_path_factory, run_ffmpeg):
    """100 s of 440 Hz tone with pauses of faint noise (room tone, about -50 dBFS)."""
    d = tmp_path_factory.mktemp("paused")
    in_pause = "+".join(f"between(t,{a},{b})" for a, b in pauses(TONE_S))
    expr = f"0.3*sin(2*PI*440*t)*not({in_pause})+0.003*(2*random(0)-1)"
    src = run_ffmpeg(
        "-f", "lavfi", "-i", f"aevalsrc='{expr}':s={SAMPLE_RATE}:d={TONE_S}", d / "paused.flac"
    )  # fmt: skip
    return decode_audio(src, d / "audio.wav")


@pytest.fixture(scope="module")
def steady_tone(tmp_path_factory, run_ffmpeg):
    """70 s of unbroken tone: no silence anywhere."""
    d = tmp_path_factory.mktemp("steady")
    src = run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=70", d / "steady.wav")
    return decode_audio(src, d / "audio.wav")


def assert_tiles(manifest: ChunkManifest, options: ChunkOptions) -> None:
    """Chunks cover [0, num_samples) with no gap or overlap and respect the length limits."""
    chunks = manifest.chunks
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert chunks[0].start_sample == 0
    assert chunks[-1].end_sample == manifest.audio.num_samples
    for prev, nxt in zip(chunks, chunks[1:], strict=False):
        assert prev.end_sample == nxt.start_sample
    assert sum(c.end_sample - c.start_sample for c in chunks) == manifest.audio.num_samples
    longest = options.core_max_s_for(manifest.audio.num_samples / SAMPLE_RATE)
    assert all(c.duration_s <= longest for c in chunks)
    assert all(c.duration_s >= options.min_chunk_s for c in chunks[:-1])
    assert [c.cut for c in chunks].count("end") == 1 and chunks[-1].cut == "end"


def test_paused_tone_cuts_inside_pauses(tmp_path, paused_tone):
    options = ChunkOptions()
    manifest = chunk_audio(paused_tone, tmp_path, "ep", options)
    assert paused_tone.duration_s == pytest.approx(TONE_S, abs=TOLERANCE_S)
    assert_tiles(manifest, options)
    assert len(manifest.chunks) >= 4
    for chunk in manifest.chunks[:-1]:
        assert chunk.cut == "silence"
        assert any(a < chunk.end_s < b for a, b in pauses(TONE_S)), chunk


def test_shorter_chunks_still_cut_in_pauses(tmp_path, paused_tone):
    options = ChunkOptions(max_chunk_s=12.0, min_chunk_s=3.0, search_s=8.0)
    manifest = chunk_audio(paused_tone, tmp_path, "ep", options)
    assert_tiles(manifest, options)
    assert len(manifest.chunks) >= 9
    for chunk in manifest.chunks[:-1]:
        assert chunk.cut == "silence" and any(a < chunk.end_s < b for a, b in pauses(TONE_S))


def test_steady_tone_falls_back_to_quietest_and_still_tiles(tmp_path, steady_tone):
    options = ChunkOptions()
    manifest = chunk_audio(steady_tone, tmp_path, "ep", options)
    assert_tiles(manifest, options)
    assert [c.cut for c in manifest.chunks[:-1]] == ["quietest"] * (len(manifest.chunks) - 1)


def test_noise_without_pauses_tiles(tmp_path, run_ffmpeg):
    src = run_ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=65:c=pink:a=0.3", tmp_path / "noise.wav")
    decoded = decode_audio(src, tmp_path / "audio.wav")
    options = ChunkOptions(max_chunk_s=20.0)
    assert_tiles(chunk_audio(decoded, tmp_path / "out", "noise", options), options)


def test_chunk_files_hold_exactly_their_samples(tmp_path, paused_tone):
    manifest = chunk_audio(paused_tone, tmp_path, "ep", ChunkOptions(max_chunk_s=20.0))
    total_s = 0.0
    for chunk in manifest.chunks:
        assert chunk.path == tmp_path / "chunks" / f"chunk-{chunk.index:04d}.wav"
        expected = read_wav_pcm(paused_tone.path, chunk.start_sample, chunk.end_sample)
        assert read_wav_pcm(chunk.path) == expected
        got = read_wav_samples(chunk.path)
        assert len(got) / SAMPLE_RATE == pytest.approx(chunk.duration_s, abs=TOLERANCE_S)
        total_s += len(got) / SAMPLE_RATE
    assert total_s == pytest.approx(paused_tone.duration_s, abs=TOLERANCE_S)


def test_chunk_files_hold_their_context_on_either_side(tmp_path, paused_tone):
    options = ChunkOptions(max_chunk_s=20.0, context_s=1.5)
    manifest = chunk_audio(paused_tone, tmp_path, "ep", options)
    assert_tiles(manifest, options)
    context_n = int(1.5 * SAMPLE_RATE)
    chunks = manifest.chunks
    assert all(c.duration_s <= options.core_max_s for c in chunks)
    # Context on both sides, cut short only at the episode's two ends.
    assert chunks[0].context_before == 0 and chunks[-1].context_after == 0
    assert all(c.context_before == context_n for c in chunks[1:])
    assert all(c.context_after == context_n for c in chunks[:-1])
    for chunk in chunks:
        expected = read_wav_pcm(
            paused_tone.path,
            chunk.start_sample - chunk.context_before,
            chunk.end_sample + chunk.context_after,
        )
        assert read_wav_pcm(chunk.path) == expected
        own = read_chunk_samples(chunk)
        assert len(own) == chunk.end_sample - chunk.start_sample
        assert (
            own.tobytes()
            == read_wav_samples(paused_tone.path, chunk.start_sample, chunk.end_sample).tobytes()
        )
    assert load_manifest(tmp_path / "manifest.json") == manifest
    # Other context, other chunk files: the manifest is not reused.
    again = chunk_audio(paused_tone, tmp_path, "ep", ChunkOptions(max_chunk_s=20.0, context_s=0))
    assert all(c.context_before == c.context_after == 0 for c in again.chunks)


def test_a_long_episodes_chunks_hold_the_window_that_follows(tmp_path, paused_tone):
    # Chunks of several windows (here 60 s of a 100 s episode) hold the 30 s that follow
    # them (long_after_s), so that their last window hears speech instead of padding; the
    # chunks themselves, and what is before them, are as without it.
    options = ChunkOptions(long_chunk_s=60.0, min_chunks=1)
    assert options.chunk_s_for(paused_tone.duration_s) == 60.0
    manifest = chunk_audio(paused_tone, tmp_path / "long", "ep", options)
    chunks = manifest.chunks
    assert len(chunks) == 2 and chunks[0].duration_s > 30.0
    assert chunks[0].context_after == 30 * SAMPLE_RATE and chunks[-1].context_after == 0
    assert all(c.context_before == 0 for c in chunks)
    first = chunks[0]
    expected = read_wav_pcm(
        paused_tone.path, first.start_sample, first.end_sample + 30 * SAMPLE_RATE
    )
    assert read_wav_pcm(first.path) == expected
    assert len(read_chunk_samples(first)) == first.end_sample - first.start_sample
    off = chunk_audio(
        paused_tone,
        tmp_path / "off",
        "ep",
        ChunkOptions(long_chunk_s=60.0, min_chunks=1, long_after_s=0),
    )
    assert [(c.start_sample, c.end_sample) for c in off.chunks] == [
        (c.start_sample, c.end_sample) for c in chunks
    ]
    assert all(c.context_after == 0 for c in off.chunks)
    # Chunks of one window (a short episode) hold nothing after them.
    short = chunk_audio(paused_tone, tmp_path / "short", "ep", ChunkOptions(max_chunk_s=20.0))
    assert all(c.context_before == c.context_after == 0 for c in short.chunks)


def test_manifest_on_disk_round_trips(tmp_path, paused_tone):
    options = ChunkOptions(max_chunk_s=25.0)
    manifest = chunk_audio(paused_tone, tmp_path, "ep-1", options)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    assert raw["episode_id"] == "ep-1" and raw["options"] == options.to_dict()
    assert raw["audio"]["source_sha256"] == paused_tone.source_sha256
    first = raw["chunks"][0]
    assert {"index", "start_sample", "end_sample", "start_s", "end_s", "sha256", "cut"} <= set(
        first
    )
    assert load_manifest(tmp_path / "manifest.json") == manifest


def test_rerun_reuses_the_manifest_and_files(tmp_path, paused_tone):
    options = ChunkOptions()
    first = chunk_audio(paused_tone, tmp_path, "ep", options)
    stamps = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    time.sleep(0.01)
    second = chunk_audio(paused_tone, tmp_path, "ep", options)
    assert second == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == stamps


def test_rerun_recuts_when_options_change_or_a_chunk_is_damaged(tmp_path, paused_tone):
    first = chunk_audio(paused_tone, tmp_path, "ep", ChunkOptions(max_chunk_s=12.0))
    second = chunk_audio(paused_tone, tmp_path, "ep", ChunkOptions(max_chunk_s=30.0))
    assert len(second.chunks) < len(first.chunks)
    on_disk = sorted(p.name for p in (tmp_path / "chunks").iterdir())
    assert on_disk == [c.path.name for c in second.chunks]  # the extra old chunks are gone

    damaged = second.chunks[1].path
    damaged.write_bytes(damaged.read_bytes()[:-2] + b"\x00\x00")
    third = chunk_audio(paused_tone, tmp_path, "ep", ChunkOptions(max_chunk_s=30.0))
    assert third == second  # same cut, files rewritten
    assert read_wav_pcm(damaged) == read_wav_pcm(
        paused_tone.path, second.chunks[1].start_sample, second.chunks[1].end_sample
    )


def test_short_audio_is_one_chunk(tmp_path, run_ffmpeg):
    src = run_ffmpeg("-f", "lavfi", "-i", "sine=duration=2", tmp_path / "short.wav")
    decoded = decode_audio(src, tmp_path / "audio.wav")
    manifest = chunk_audio(decoded, tmp_path / "out", "short")
    assert [(c.start_sample, c.end_sample, c.cut) for c in manifest.chunks] == [
        (0, decoded.num_samples, "end")
    ]


def test_episode_fixture_cuts_where_it_is_quiet(tmp_path, fixtures_dir):
    decoded = decode_audio(fixtures_dir / "episode.mp3", tmp_path / "audio.wav")
    options = ChunkOptions(max_chunk_s=15.0)
    manifest = chunk_audio(decoded, tmp_path, "episode", options)
    assert_tiles(manifest, options)
    samples = read_wav_samples(decoded.path)
    loud = np.sqrt(np.mean(samples**2))
    half = SAMPLE_RATE // 20  # 50 ms either side of the cut
    for chunk in manifest.chunks[:-1]:
        around = samples[chunk.end_sample - half : chunk.end_sample + half]
        assert np.sqrt(np.mean(around**2)) < loud / 10, chunk  # 20 dB under the episode


def _window(parts: list[tuple[float, float]]) -> bytes:
    """s16le audio from (seconds, amplitude) parts: a 440 Hz tone, or silence at amplitude 0."""
    pieces = []
    for seconds, amplitude in parts:
        t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
        pieces.append(amplitude * np.sin(2 * np.pi * 440 * t))
    return (np.concatenate(pieces) * 32767).astype("<i2").tobytes()


# (name, window parts, expected cut second, expected kind): which cut find_cut picks.
CUT_CASES = [
    ("longest pause wins", [(21, 0.3), (1.5, 0), (4, 0.3), (0.4, 0), (3.1, 0.3)], 21.75, "silence"),
    (
        "later pause wins a tie",
        [(22, 0.3), (0.5, 0), (4, 0.3), (0.5, 0), (3, 0.3)],
        26.75,
        "silence",
    ),
    ("pause too short", [(24, 0.3), (0.2, 0), (5.8, 0.3)], 24.19, "quietest"),  # last tie
    ("quietest frame", [(25, 0.3), (0.1, 0.01), (4.9, 0.3)], 25.05, "quietest"),
    ("pause before the region", [(10, 0.3), (2, 0), (18, 0.3)], None, "quietest"),
]


@pytest.mark.parametrize(
    ("name", "parts", "cut_s", "kind"), CUT_CASES, ids=[c[0] for c in CUT_CASES]
)
def test_find_cut_picks(name, parts, cut_s, kind):
    lo, hi = 20 * SAMPLE_RATE, 30 * SAMPLE_RATE
    offset, got_kind = find_cut(_window(parts), lo, hi, ChunkOptions())
    assert got_kind == kind
    assert lo <= offset <= hi
    if cut_s is not None:
        assert offset / SAMPLE_RATE == pytest.approx(cut_s, abs=0.03)


INVALID = [
    {"max_chunk_s": 0},
    {"max_chunk_s": -1},
    {"max_chunk_s": 31},
    {"long_chunk_s": 0},
    {"long_chunk_s": 601},
    {"min_chunks": 0},
    {"min_chunks": 2.5},
    {"max_chunk_s": float("nan")},
    {"max_chunk_s": 0.5},  # under the 1 s a chunk must hold of its own
    {"min_chunk_s": 40},
    {"min_chunk_s": -1},
    {"min_chunk_s": 20, "max_chunk_s": 10, "search_s": 5},
    {"search_s": 0},
    {"search_s": 31},
    {"min_silence_ms": 0},
    {"step_ms": 0},
    {"silence_rel_db": 3},
    {"silence_floor_dbfs": 0},
    {"context_s": -1},
    {"long_after_s": -1},
    {"long_after_s": 30.5},  # more than the one window it fills
    {"context_s": 14.6},  # leaves less than 1 s of a 30 s window for the chunk itself
    {"max_chunk_s": True},
    {"max_chunk_s": "30"},
]


@pytest.mark.parametrize("kwargs", INVALID, ids=[str(k) for k in INVALID])
def test_invalid_options_raise(kwargs):
    with pytest.raises(OptionsError):
        ChunkOptions(**kwargs)


# Run in a fresh interpreter so ru_maxrss (a process-wide peak) measures chunking alone.
MEASURE_RSS = """
import json, resource, sys
from pathlib import Path
from pipeline.audio.chunk import chunk_audio
from pipeline.core.types import DecodedAudio
audio = DecodedAudio(path=Path(sys.argv[1]), num_samples=int(sys.argv[2]), source_sha256="x")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
manifest = chunk_audio(audio, Path(sys.argv[3]), "long")
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"growth_kib": after - before, "chunks": len(manifest.chunks)}))
"""


def test_long_episode_is_chunked_in_small_memory(tmp_path, run_ffmpeg):
    """30 minutes (55 MiB of samples) must be cut reading one window at a time."""
    src = run_ffmpeg(
        "-f", "lavfi", "-i", f"sine=frequency=440:duration=1800:sample_rate={SAMPLE_RATE}",
        "-af", "volume='lt(mod(t,7),6)':eval=frame", tmp_path / "long.wav",
    )  # fmt: skip
    decoded = decode_audio(src, tmp_path / "audio.wav")
    args = [str(decoded.path), str(decoded.num_samples), str(tmp_path / "out")]
    done = subprocess.run(
        [sys.executable, "-c", MEASURE_RSS, *args],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["chunks"] >= 20  # 90 s chunks: a long episode's (ChunkOptions.long_chunk_s)
    # The WAV is 55 MiB; a chunk WAV 3.7 MiB (90 s and the 30 s after it).
    assert result["growth_kib"] < 20 * 1024, result
    assert_tiles(load_manifest(tmp_path / "out" / "manifest.json"), ChunkOptions())


@pytest.mark.parametrize(
    ("duration_s", "chunk_s"),
    [(290.0, 30.0), (479.0, 30.0), (480.0, 60.0), (719.0, 60.0), (1061.0, 90.0), (5400.0, 90.0)],
)
def test_a_long_episode_gets_longer_chunks(duration_s: float, chunk_s: float) -> None:
    """Whole windows up to long_chunk_s, while the episode still gives min_chunks (8) chunks."""
    from pipeline.audio.chunk import plan_tiling

    options = ChunkOptions()
    assert options.chunk_s_for(duration_s) == chunk_s
    total = int(duration_s * SAMPLE_RATE)
    bounds = plan_tiling(total, options, lambda start, lo, hi: (hi, "quietest"))
    lengths = [(end - start) / SAMPLE_RATE for start, end, _ in bounds]
    assert max(lengths) == pytest.approx(chunk_s)
    assert len(bounds) >= options.min_chunks
    # Opting out keeps every chunk within Whisper's window, however long the episode.
    short = ChunkOptions(long_chunk_s=30.0)
    assert short.chunk_s_for(duration_s) == 30.0
    # Shorter chunks asked for are what is cut, however long the episode.
    assert ChunkOptions(max_chunk_s=20.0).chunk_s_for(duration_s) == 20.0


def test_manifest_paths_are_under_out_dir(tmp_path, paused_tone):
    manifest = chunk_audio(paused_tone, tmp_path / "ep", "ep")
    assert all(Path(c.path).parent == tmp_path / "ep" / "chunks" for c in manifest.chunks)
