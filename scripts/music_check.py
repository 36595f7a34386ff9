"""Check the quality flags on a copy of the dev episode in which one chunk's speech is music.

Run from the repository root (takes a few minutes on a CPU: the copy is transcribed in full):

    .venv/bin/python scripts/music_check.py [--episode ../shared/eval/dev-episode/episode.mp3]
        [--chunk N] [--work /tmp/podscribe-music-check] [--no-repair]

1. The original episode is decoded and chunked (no transcription) to find chunk N's time range
   (default: the middle chunk).
2. ffmpeg makes the music, a melody over a chord progression, every note a chord of sines with
   a 5 Hz tremolo, and splices it over that range, leaving 0.3 s at each end so the silences
   the chunker cut in are still there; the copy is encoded like the original (64 kbps mono mp3).
3. The copy goes through the normal episode path (chunk, transcribe, flag, repair, report).
4. PASS when the hallucination or dropped-speech flag fires on the chunk(s) holding the music
   and on no other chunk; the script exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.audio.decode import find_ffmpeg  # noqa: E402
from pipeline.core.types import ChunkManifest  # noqa: E402
from pipeline.episode import prepare_episode, run_episode  # noqa: E402
from pipeline.quality.signals import QualityReport  # noqa: E402

DEFAULT_EPISODE = ROOT.parent / "shared" / "eval" / "dev-episode" / "episode.mp3"
EDGE_S = 0.3  # original audio kept at each end of the chunk: the chunker's silences stay put
MUSIC_GAIN = 0.12  # per sine: a chord of three peaks near -12 dBFS, about as loud as the speech

# Chord roots step through I-IV-V-vi of C major once a second; a melody note (a fifth-cycle
# through the scale, 4 per second) rides an octave above.
_ROOT = (
    "261.63*pow(2,if(eq(mod(floor(t),4),1),5,if(eq(mod(floor(t),4),2),7,"
    "if(eq(mod(floor(t),4),3),9,0)))/12)"
)
_MUSIC = (
    "G*(0.65+0.35*sin(2*PI*5*t))*(sin(2*PI*R*t)+sin(2*PI*R*1.2599*t)+sin(2*PI*R*1.4983*t))"
    "+0.8*G*sin(2*PI*2*R*pow(2,mod(floor(t*4)*7,12)/12)*t)"
)


def music_expression(gain: float = MUSIC_GAIN) -> str:
    """The ffmpeg aevalsrc expression of the music."""
    return _MUSIC.replace("R", f"({_ROOT})").replace("G", str(gain))


def make_music_copy(episode: Path, start_s: float, end_s: float, out: Path) -> Path:
    """``episode`` with [start_s, end_s) replaced by music (all done by ffmpeg), as 64 kbps mp3."""
    duration = end_s - start_s
    graph = (
        f"[0:a]atrim=0:{start_s},asetpts=PTS-STARTPTS[head];"
        f"[0:a]atrim={end_s},asetpts=PTS-STARTPTS[tail];"
        f"aevalsrc='{music_expression()}':s=16000:d={duration},"
        f"afade=t=in:d=0.05,afade=t=out:st={duration - 0.05}:d=0.05[music];"
        "[head][music][tail]concat=n=3:v=0:a=1[out]"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        find_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-i", str(episode), "-filter_complex", graph, "-map", "[out]",
        "-ac", "1", "-ar", "16000", "-c:a", "libmp3lame", "-b:a", "64k", str(out),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg failed making {out}: {done.stderr.strip()}")
    return out


def music_chunks(manifest: ChunkManifest, start_s: float, end_s: float) -> set[int]:
    """Chunks of the copy that are mostly music (more than half their length in the range)."""
    return {
        c.index
        for c in manifest.chunks
        if min(c.end_s, end_s) - max(c.start_s, start_s) > c.duration_s / 2
    }


def flagged(report: QualityReport) -> dict[int, list[str]]:
    """Chunk index → the hallucination / dropped-speech flags raised on it."""
    out = {}
    for f in report.flags:
        names = [n for n in f.names if n in ("hallucination", "dropped_speech")]
        if names:
            out[f.chunk_index] = names
    return out


def main() -> int:
    """Build the copy, run the episode path on it and print what was flagged where."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episode", type=Path, default=DEFAULT_EPISODE)
    parser.add_argument("--chunk", type=int, default=None, help="chunk to replace [middle]")
    parser.add_argument("--work", type=Path, default=Path("/tmp/podscribe-music-check"))
    parser.add_argument("--no-repair", action="store_true", help="flag only, no retries")
    args = parser.parse_args()

    from pipeline.quality.repair import RepairPolicy

    original = prepare_episode(str(args.episode), "music-check-original", args.work / "audio")
    index = args.chunk if args.chunk is not None else len(original.chunks) // 2
    chunk = original.chunks[index]
    start_s, end_s = chunk.start_s + EDGE_S, chunk.end_s - EDGE_S
    copy = make_music_copy(args.episode, start_s, end_s, args.work / "episode-music.mp3")
    print(f"music over chunk {index} of the original: {start_s:.2f}-{end_s:.2f} s → {copy}")

    result = run_episode(
        str(copy),
        episode_id="music-check",
        audio_root=args.work / "audio",
        transcripts_root=args.work / "transcripts",
        repair_policy=RepairPolicy(enabled=not args.no_repair),
    )
    manifest = prepare_episode(str(copy), "music-check", args.work / "audio")
    expected = music_chunks(manifest, start_s, end_s)
    report = result.quality
    assert report is not None
    got = flagged(report)
    for s, f in zip(report.signals, report.flags, strict=True):
        mark = "MUSIC" if s.chunk_index in expected else "     "
        print(
            f"{mark} chunk {s.chunk_index:2d} {s.start_s:7.2f}-{s.end_s:7.2f} s "
            f"words {s.words:3d} speech {s.speech_s:4.1f} s music {s.music_s:4.1f} s "
            f"uncovered {s.uncovered_sound_s:4.1f} s over-nonspeech {s.words_over_nonspeech:2d} "
            f"logprob {s.avg_logprob} flags {list(f.names)}"
        )
    for r in report.repairs:
        print(
            f"repair chunk {r.chunk_index}: {list(r.flags_before)} → kept {r.kept}, "
            f"flags now {list(r.flags_after)}; retry said {r.after.words} words"
        )
    ok = bool(expected) and set(got) == expected
    print(
        json.dumps(
            {
                "music_chunks": sorted(expected),
                "flagged": got,
                "pass": ok,
                "report": str(result.out_dir / "report.html"),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
