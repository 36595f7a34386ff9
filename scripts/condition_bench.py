"""Conditioning chunks on the previous chunk's text (issue 13): WER with and without.

Runs the CLI's episode path (``run_episode``: default chunking, repair on) once per
``--condition`` value on each evaluation set, with fresh chunk stores, and prints WER, its
S / D / I, the near-cut and far error rates, fillers ("you know", "um", "uh") in the
transcript and the wall time. 0 is today's default (every chunk cold); a large value
conditions each chunk on the one before it through the whole episode, as transcribe() does
from window to window. For example (minutes on a loaded 2-core machine):

    nice -n 10 .venv/bin/python scripts/condition_bench.py --condition 0 100000 8 \\
        ../shared/eval/longform-dev ../shared/eval/dev-episode ../shared/eval/seed-episode
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path

from pipeline.asr.options import TranscribeOptions
from pipeline.episode import run_episode
from pipeline.quality.repair import RepairPolicy
from pipeline.sources.reference import read_reference

FILLERS = re.compile(r"\b(you know|um+|uh+)\b", re.IGNORECASE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sets", nargs="+", type=Path, help="eval folders")
    parser.add_argument("--condition", nargs="+", type=int, default=[0, 100_000])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--keep", type=Path, help="write each transcript's text here")
    parser.add_argument(
        "--light",
        action="store_true",
        help="no word timing, no repair (the text does not depend on word timing; both arms "
        "alike): about half the time",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="condition-bench-"))
    print("set\tcondition\tchunks\tWER\tS/D/I\tnear\tfar\tfillers\twall_s", flush=True)
    for folder in args.sets:
        reference = read_reference(folder / "reference.txt")
        for k in args.condition:
            options = TranscribeOptions(
                condition_chunks=k, batch_size=args.batch_size, word_timestamps=not args.light
            )
            started = time.perf_counter()
            result = run_episode(
                str(folder / "episode.mp3"),
                reference=reference,
                transcribe_options=options,
                episode_id=folder.name,
                audio_root=work / "audio",
                transcripts_root=work / f"transcripts-{k}",
                chunk_store=work / f"store-{folder.name}-{k}",
                repair_policy=RepairPolicy(enabled=False) if args.light else None,
            )
            wall = time.perf_counter() - started
            score = result.score
            assert score is not None
            c = score.counts
            cuts = score.cuts
            near = far = "-"
            if cuts is not None:
                near = f"{cuts.near_errors}/{cuts.near_ref_words}"
                far = f"{cuts.far_errors}/{cuts.far_ref_words}"
            text = " ".join(s.text.strip() for s in result.transcript.segments)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"{folder.name}-{k}.txt").write_text(
                    "\n".join(s.text.strip() for s in result.transcript.segments) + "\n"
                )
            print(
                f"{folder.name}\t{k}\t{result.chunks}\t{score.wer:.2%}\t"
                f"{c.substitutions}/{c.deletions}/{c.insertions}\t{near}\t{far}\t"
                f"{len(FILLERS.findall(text))}\t{wall:.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
