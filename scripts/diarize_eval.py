"""Diarize an episode and print its DER against an RTTM: the loop the diarizer was tuned with.

    python scripts/diarize_eval.py EPISODE.(mp3|wav) REFERENCE.rttm [option=value ...]

Options are DiarizeOptions fields (``speakers=2``, ``switch_penalty=0.4``). A dev-episode
``parts.tsv`` (line, start_s, end_s, source) stands in for an RTTM: one speaker per source.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.audio.diarize import DiarizeOptions, diarize_audio
from pipeline.core.types import SpeakerSpan
from pipeline.quality.der import diarization_error
from pipeline.sources.rttm import read_rttm


def parts_spans(path: Path) -> tuple[SpeakerSpan, ...]:
    """parts.tsv as spans: the speaker is the source's corpus plus its reader when named."""
    spans = []
    for line in path.read_text().splitlines()[1:]:
        _, start, end, source = line.split("\t")
        words = source.split()
        # "CMU ARCTIC cmu_arctic_us_aew_a0001.wav" -> reader aew; others: one reader per corpus
        speaker = words[-1].split("_")[3] if "cmu_arctic" in source else " ".join(words[:2])
        spans.append(SpeakerSpan(speaker, float(start), float(end)))
    return tuple(spans)


def main(argv: list[str]) -> None:
    episode, reference = Path(argv[0]), Path(argv[1])
    fields = {f.name: f.type for f in dataclasses.fields(DiarizeOptions)}
    given = {}
    for arg in argv[2:]:
        key, value = arg.split("=", 1)
        given[key] = None if value == "None" else (value if key == "device" else float(value))
        if key in ("speakers", "max_speakers") and given[key] is not None:
            given[key] = int(given[key])
    assert set(given) <= set(fields), set(given) - set(fields)
    options = DiarizeOptions(**given)
    with tempfile.TemporaryDirectory() as tmp:
        wav = episode
        if episode.suffix != ".wav":
            wav = Path(tmp) / "episode.wav"
            subprocess.run(
                [
                    "ffmpeg",
                    "-loglevel",
                    "error",
                    "-i",
                    str(episode),
                    "-ar",
                    "16000",
                    "-ac",
                    "1",
                    "-c:a",
                    "pcm_s16le",
                    str(wav),
                ],
                check=True,
            )
        result = diarize_audio(wav, episode.stem, options)
    ref = parts_spans(reference) if reference.suffix == ".tsv" else read_rttm(reference)
    score = diarization_error(ref, result.turns)
    print(
        json.dumps(
            {
                "der": round(score.der or 0, 4),
                "miss_s": score.miss_s,
                "false_alarm_s": score.false_alarm_s,
                "confusion_s": score.confusion_s,
                "total_s": score.total_s,
                "ref_speakers": score.ref_speakers,
                "hyp_speakers": score.hyp_speakers,
                "elapsed_s": result.elapsed_s,
                "found": result.provenance["found"],
                "options": given,
            }
        )
    )


if __name__ == "__main__":
    main(sys.argv[1:])
