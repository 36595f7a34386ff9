"""Score the transcripts gpu_check.py brought back, with podscribe's normaliser.

python scripts/gpu_score.py GPU_OUT_DIR REFERENCE
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipeline.core.transcript import load_transcript
from pipeline.quality.score import score_texts, score_transcript
from pipeline.sources.reference import read_reference


def main() -> None:
    out, ref = Path(sys.argv[1]), read_reference(sys.argv[2]).text
    scores = {
        p.name: score_transcript(load_transcript(p), ref).wer
        for p in sorted(out.glob("pipeline-*.json"))
    }
    baseline = out / "baseline.txt"
    if baseline.exists():
        scores["baseline.txt"] = score_texts(baseline.read_text(), ref).wer
    print(json.dumps(scores, indent=2))


if __name__ == "__main__":
    main()
