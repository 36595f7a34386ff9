"""How robust the automatic speaker count is on short audio: the diarizer on slices.

    python scripts/diarize_slices.py EPISODE.(mp3|wav) REFERENCE.(rttm|tsv) [--slice-s 30 60]

Cuts the episode into back-to-back slices of each length, diarizes every slice with default
options (``--speakers auto``) and compares with the reference cut the same way: speakers
found against speakers present (a speaker counts as present with at least ``--min-voice-s``
seconds in the slice), and DER. A podcast clip, a trailer or the first minute of an episode
is this short; an episode's own figure (diarize_eval.py) says nothing about them.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np
from diarize_eval import parts_spans

from pipeline.audio.diarize import diarize_audio
from pipeline.core.types import SpeakerSpan
from pipeline.quality.der import diarization_error
from pipeline.sources.rttm import read_rttm

RATE = 16000


def decode(episode: Path, out: Path) -> np.ndarray:
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(episode), "-ar", str(RATE), "-ac", "1"]
        + ["-c:a", "pcm_s16le", str(out)],
        check=True,
    )
    with wave.open(str(out)) as f:
        return np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")


def write(samples: np.ndarray, out: Path) -> None:
    with wave.open(str(out), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(RATE)
        f.writeframes(samples.tobytes())


def cut(spans: tuple[SpeakerSpan, ...], start: float, end: float) -> tuple[SpeakerSpan, ...]:
    """The spans inside [start, end), shifted to start at 0."""
    return tuple(
        SpeakerSpan(s.speaker, max(s.start, start) - start, min(s.end, end) - start)
        for s in spans
        if s.end > start and s.start < end
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episode", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("--slice-s", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--min-voice-s", type=float, default=3.0)
    args = parser.parse_args()
    ref = (
        parts_spans(args.reference)
        if args.reference.suffix == ".tsv"
        else read_rttm(args.reference)
    )
    with tempfile.TemporaryDirectory() as tmp:
        audio = decode(args.episode, Path(tmp) / "episode.wav")
        total_s = len(audio) / RATE
        for length in args.slice_s:
            right = n = 0
            ders: list[float] = []
            found_counts: list[str] = []
            for k in range(int(total_s // length)):
                start, end = k * length, (k + 1) * length
                wav = Path(tmp) / f"slice-{k}.wav"
                write(audio[int(start * RATE) : int(end * RATE)], wav)
                truth = cut(ref, start, end)
                voice: dict[str, float] = {}
                for s in truth:
                    voice[s.speaker] = voice.get(s.speaker, 0.0) + s.end - s.start
                present = sum(1 for v in voice.values() if v >= args.min_voice_s)
                result = diarize_audio(wav, f"slice-{k}")
                found = len(result.speakers)
                score = diarization_error(truth, result.turns)
                n += 1
                right += found == present
                if score.der is not None:
                    ders.append(score.der)
                found_counts.append(f"{found}/{present}")
            print(
                f"{args.episode.parent.name} slices of {length:.0f} s: {n} slices, speaker count"
                f" right in {right}/{n}, mean DER {np.mean(ders):.1%},"
                f" worst {max(ders):.1%} (found/present: {' '.join(found_counts)})",
                flush=True,
            )


if __name__ == "__main__":
    main()
