"""Make the bundled demo episodes from short public-domain real speech (ffmpeg).

Run from the repository root with the shared media beside the checkout:
``python scripts/make_demo.py ../shared/media``. The outputs are committed (with NOTICE.md,
their provenance), so the demo never needs the media folder.

Outputs, pipeline/data/demo/episode-<n>.mp3 + episode-<n>.txt (the true text as reference):
1. John F. Kennedy, inaugural address, 1961 ("ask not ...") — 11 s.
2. Jane Austen, Sense and Sensibility, ch. 1, LibriVox reading — 5 utterances, ~26 s.
3. LJ Speech LJ001-0001..0005 (a LibriVox reader on the history of printing) — ~36 s.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "pipeline" / "data" / "demo"
GAP_S = 0.4  # silence between utterances, as between sentences of a reading
LJ_CLIPS = [f"LJ001-{n:04d}.wav" for n in range(1, 6)]


def ffmpeg(*args: str) -> None:
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def transcripts(tsv: Path) -> dict[str, str]:
    with open(tsv, newline="") as f:
        return {row[0]: row[1] for row in csv.reader(f, delimiter="\t") if row}


def join(clips: list[Path], out: Path) -> None:
    """The clips in order, GAP_S of silence between them, as a 16 kHz mono MP3."""
    inputs: list[str] = []
    labels = []
    for k, clip in enumerate(clips):
        inputs += ["-i", clip.as_posix()]
        labels.append(
            f"[{k}:a]aresample=16000,aformat=channel_layouts=mono,apad=pad_dur={GAP_S}[a{k}]"
        )
    graph = ";".join(labels) + ";" + "".join(f"[a{k}]" for k in range(len(clips)))
    graph += f"concat=n={len(clips)}:v=0:a=1[out]"
    ffmpeg(*inputs, "-filter_complex", graph, "-map", "[out]", "-b:a", "48k", out.as_posix())


def main(media: Path) -> None:
    DEMO.mkdir(parents=True, exist_ok=True)
    join([media / "jfk.flac"], DEMO / "episode-1.mp3")
    (DEMO / "episode-1.txt").write_text((media / "jfk.txt").read_text().strip() + "\n")
    austen = transcripts(media / "austen" / "transcripts.tsv")
    join([media / "austen" / name for name in austen], DEMO / "episode-2.mp3")
    (DEMO / "episode-2.txt").write_text("\n".join(austen.values()) + "\n")
    lj = transcripts(media / "ljspeech" / "transcripts.tsv")
    join([media / "ljspeech" / name for name in LJ_CLIPS], DEMO / "episode-3.mp3")
    (DEMO / "episode-3.txt").write_text("\n".join(lj[n] for n in LJ_CLIPS) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ROOT.parent / "shared" / "media"))
