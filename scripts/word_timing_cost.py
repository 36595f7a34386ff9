"""What word timings cost: CPU time (all threads) of transcribing an episode's chunks without
and with them, in one process, the model loaded first. CPU time, unlike wall time, is not
distorted by other work on a shared machine. Also checks that the text is the same.

    .venv/bin/python scripts/word_timing_cost.py [--episode ../shared/eval/dev-episode/episode.mp3]
        [--work /tmp/podscribe-word-cost]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipeline.asr.loading import load_model  # noqa: E402
from pipeline.asr.options import TranscribeOptions  # noqa: E402
from pipeline.asr.transcribe import transcribe_chunks  # noqa: E402
from pipeline.episode import prepare_episode  # noqa: E402

DEV = ROOT.parent / "shared" / "eval" / "dev-episode" / "episode.mp3"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--episode", default=str(DEV))
    parser.add_argument("--work", type=Path, default=Path("/tmp/podscribe-word-cost"))
    args = parser.parse_args()
    manifest = prepare_episode(args.episode, "word-cost", args.work / "audio")
    loaded = load_model(TranscribeOptions())
    runs = {}
    for timed in (False, True):
        cpu, wall = time.process_time(), time.perf_counter()
        results = transcribe_chunks(manifest.chunks, TranscribeOptions(word_timestamps=timed),
                                    loaded=loaded)  # fmt: skip
        runs[timed] = {
            "cpu_s": round(time.process_time() - cpu, 2),
            "wall_s": round(time.perf_counter() - wall, 2),
            "text": " ".join(r.text for r in results),
        }
    print(json.dumps({
        "chunks": len(manifest.chunks),
        "without": {k: v for k, v in runs[False].items() if k != "text"},
        "with": {k: v for k, v in runs[True].items() if k != "text"},
        "cpu_ratio": round(runs[True]["cpu_s"] / runs[False]["cpu_s"], 3),
        "same_text": runs[True]["text"] == runs[False]["text"],
    }))  # fmt: skip


if __name__ == "__main__":
    main()
