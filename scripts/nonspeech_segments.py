"""Count the segments of a transcript that lie over audio the project's own analysis calls
silence, noise or music (``pipeline.audio.analysis.classify_windows``, per chunk as the quality
checks classify it): no window under the segment is speech.

    python scripts/nonspeech_segments.py transcripts/EP/transcript.json \
        audio/EP/decoded-16k-mono.wav

Prints one line per such segment and a JSON summary as the last line.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.audio.analysis import classify_windows
from pipeline.audio.decode import read_wav_samples
from pipeline.core.transcript import load_transcript
from pipeline.core.types import SAMPLE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("transcript", type=Path, help="transcript.json written by podscribe")
    parser.add_argument("audio", type=Path, help="the episode's decoded 16 kHz mono WAV")
    args = parser.parse_args()
    transcript = load_transcript(args.transcript)
    found = []
    for chunk in transcript.chunks:
        start_n = round(chunk.start_s * SAMPLE_RATE)
        end_n = round(chunk.end_s * SAMPLE_RATE)
        windows = classify_windows(read_wav_samples(args.audio, start_n, end_n), chunk.start_s)
        for seg in chunk.segments:
            if seg.text.strip() and not windows.speech_over(seg.start, seg.end):
                found.append(seg)
                classes = ",".join(windows.classes_over(seg.start, seg.end))
                where = f"{seg.start:9.2f}-{seg.end:9.2f} chunk {seg.chunk_index}"
                print(f"{where}: {seg.text!r} [{classes}]")
    segments = sum(len(c.segments) for c in transcript.chunks)
    print(json.dumps({"segments": segments, "over_nonspeech": len(found)}))


if __name__ == "__main__":
    main()
