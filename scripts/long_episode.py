"""Make a long test episode by repeating a real one: for the memory check of issue 5.

Concatenates SOURCE (an mp3) N times with ffmpeg's concat demuxer (stream copy: no re-encode)
into OUT/long.mp3 and repeats its REFERENCE text N times into OUT/long.txt, so the long
episode has a known transcript. Then, for example (peak memory of the whole CLI run):

    .venv/bin/python scripts/long_episode.py ../shared/eval/dev-episode/episode.mp3 \\
        ../shared/eval/dev-episode/reference.txt 38 /tmp/long     # 38 x 290 s = 3 h 04 min
    /usr/bin/time -v .venv/bin/podscribe transcribe /tmp/long/long.mp3 \\
        --reference /tmp/long/long.txt --audio-root /tmp/long/audio \\
        --transcripts-root /tmp/long/transcripts --json
"""

from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from pipeline.audio.decode import find_ffmpeg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("reference", type=Path)
    parser.add_argument("times", type=int)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    listing = args.out / "concat.txt"
    listing.write_text(f"file '{args.source.resolve()}'\n" * args.times)
    subprocess.run(
        [
            find_ffmpeg(),
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "concat",
            "-safe",
            "0",
            "-i",
            str(listing),
            "-c",
            "copy",
            str(args.out / "long.mp3"),
        ],
        check=True,
    )
    text = args.reference.read_text(encoding="utf-8").strip()
    (args.out / "long.txt").write_text("\n".join([text] * args.times) + "\n", encoding="utf-8")
    print(args.out / "long.mp3", args.out / "long.txt")


if __name__ == "__main__":
    main()
