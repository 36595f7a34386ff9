"""What diarization adds to a CPU run: `podscribe transcribe` with and without `--speakers`.

Alternating pairs (off, auto, off, auto, …) of the real command, each into fresh audio and
transcript folders, so neither side finds the other's chunks or cached results. Prints each
run's wall time, the per-pair ratio, and the total added by diarization over all pairs. One
run, same machine: a ratio, never an absolute time (these machines are shared and noisy).

    .venv/bin/python scripts/speaker_overhead.py [EPISODE REFERENCE RTTM] [--pairs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT.parent / "shared" / "eval" / "conversation-dev"


def one_run(
    episode: str, reference: str, rttm: str, speakers: str, work: Path
) -> tuple[float, dict]:
    """One `podscribe transcribe` in a subprocess; returns (wall seconds, its --json)."""
    cmd = [
        str(Path(sys.executable).parent / "podscribe"),
        "transcribe",
        episode,
        "--reference",
        reference,
        "--rttm",
        rttm,
        "--speakers",
        speakers,
        "--json",
        "--audio-root",
        str(work / "audio"),
        "--transcripts-root",
        str(work / "tr"),
    ]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return wall, json.loads(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episode", nargs="?", default=str(EVAL / "episode.mp3"))
    parser.add_argument("reference", nargs="?", default=str(EVAL / "reference.txt"))
    parser.add_argument("rttm", nargs="?", default=str(EVAL / "reference.rttm"))
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()

    totals = {"off": 0.0, "auto": 0.0}
    with tempfile.TemporaryDirectory(prefix="speaker-overhead-") as tmp:
        for i in range(1, args.pairs + 1):
            walls = {}
            for mode in ("off", "auto"):
                wall, out = one_run(
                    args.episode, args.reference, args.rttm, mode, Path(tmp) / f"{i}-{mode}"
                )
                walls[mode] = wall
                totals[mode] += wall
                extra = (
                    f" DER {out['der']:.2%} speakers {out['speakers']} cpWER {out['cpwer']:.2%}"
                    if mode == "auto"
                    else ""
                )
                print(
                    f"pair {i} --speakers {mode:4}: {wall:6.1f} s  WER {out['wer']:.2%}{extra}"
                    f"  (load {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
            print(f"pair {i}: diarization adds {walls['auto'] / walls['off'] - 1:+.1%}", flush=True)
    print(
        f"all {args.pairs} pairs: {totals['off']:.1f} s without, {totals['auto']:.1f} s with:"
        f" diarization adds {totals['auto'] / totals['off'] - 1:+.1%}"
    )


if __name__ == "__main__":
    main()
