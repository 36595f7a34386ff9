"""Check word timings on the dev episode against where its parts are spoken.

Run from the repository root (a minute or two on a CPU: the episode is transcribed in full):

    .venv/bin/python scripts/word_timing_check.py [--episode ../shared/eval/dev-episode/episode.mp3]
        [--parts ../shared/eval/dev-episode/parts.tsv] [--backend openai-whisper|faster-whisper]
        [--batch-size 8] [--transcript transcript.json] [--json]

The episode goes through the normal path (``run_episode``: chunk, transcribe, write) into a
temporary folder, unless ``--transcript`` names a transcript.json to check instead. Then
(``pipeline.quality.timing``): the first word of each part must start inside
[start, start + 0.8 s] of that part, and no word may start in the silences between parts.
Prints one line per part and the figures (parts in their window, largest deviation, words in
gaps); exits 1 when the check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.asr.options import TranscribeOptions  # noqa: E402
from pipeline.core.transcript import load_transcript  # noqa: E402
from pipeline.core.types import Transcript  # noqa: E402
from pipeline.episode import run_episode  # noqa: E402
from pipeline.quality.timing import (  # noqa: E402
    DEFAULT_WINDOW_S,
    check_word_timing,
    read_parts,
    transcript_words,
)

DEV = ROOT.parent / "shared" / "eval" / "dev-episode"


def transcribe(episode: Path, options: TranscribeOptions) -> Transcript:
    """The episode's transcript, made as ``podscribe transcribe`` makes it."""
    with tempfile.TemporaryDirectory(prefix="podscribe-word-timing-") as tmp:
        work = Path(tmp)
        result = run_episode(
            str(episode),
            transcribe_options=options,
            audio_root=work / "audio",
            transcripts_root=work / "transcripts",
        )
        return result.transcript


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episode", type=Path, default=DEV / "episode.mp3")
    parser.add_argument("--parts", type=Path, default=DEV / "parts.tsv")
    parser.add_argument("--transcript", type=Path, help="check this transcript.json instead")
    parser.add_argument("--backend", default="openai-whisper")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW_S)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    parts = read_parts(args.parts)
    if args.transcript:
        transcript = load_transcript(args.transcript)
    else:
        options = TranscribeOptions(backend=args.backend, batch_size=args.batch_size)
        transcript = transcribe(args.episode, options)
    check = check_word_timing(transcript_words(transcript), parts, args.window)
    if args.json:
        print(json.dumps(check.as_dict(), indent=2))
    else:
        for s in check.starts:
            mark = "ok " if s.ok else "BAD"
            where = "no word" if s.start_s is None else f"{s.word!r} at {s.start_s:.2f} s"
            dev = "" if s.deviation_s is None else f" ({s.deviation_s:+.2f} s)"
            print(f"{mark} part {s.part.line:2d} starts {s.part.start_s:7.2f} s: {where}{dev}")
        for g in check.gap_words:
            print(f"BAD word {g.word!r} starts at {g.start_s:.2f} s, in the gap before part "
                  f"{g.before_line}")  # fmt: skip
        dev = check.max_deviation_s
        print(
            f"{check.parts_ok}/{len(check.starts)} parts open within {check.window_s:g} s; "
            f"max deviation {'n/a' if dev is None else f'{dev:.2f} s'}; "
            f"{len(check.gap_words)} words start in gaps; {check.words} timed words: "
            + ("PASS" if check.passed else "FAIL")
        )
    return 0 if check.passed else 1


if __name__ == "__main__":
    sys.exit(main())
