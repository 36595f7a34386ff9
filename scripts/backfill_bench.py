"""Episodes per hour: a backfill (chunks of all episodes in shared batches) against the same
episodes run one after another (``run_episode`` each, the per-episode path).

Six dev-sized episodes are made from ../shared/eval with ffmpeg (64 kbps mono mp3):
``dev`` and ``seed`` (stream copies of dev-episode and seed-episode), ``dev-quiet`` and
``seed-quiet`` (the same at ``volume=0.8``, re-encoded: other samples, so no stored chunk
is shared), ``dev-cut`` and ``seed-cut`` (from 15 s to the end: other cut points). They are
served with a feed on 127.0.0.1. In one process, the model loaded and warmed up first, each
round runs both modes on fresh folders and a fresh catalog (nothing reused), alternating
which goes first; both modes fetch over HTTP, decode, cut, transcribe, repair, score and
write. Texts are compared between the modes.

    nice -n 10 .venv/bin/python scripts/backfill_bench.py [--eval ../shared/eval] \\
        [--rounds 1] [--batch-size 0] [--no-repair] [--work /tmp/backfill-bench] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from pipeline.asr.loading import load_model
from pipeline.asr.options import TranscribeOptions
from pipeline.audio.decode import find_ffmpeg
from pipeline.backfill import BackfillOptions, backfill_feed
from pipeline.episode import run_episode
from pipeline.quality.repair import RepairPolicy
from pipeline.sources.feed import fetch_feed
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import read_reference

ROOT = Path(__file__).resolve().parent.parent
LOCAL = FetchLimits(allow_private_networks=True)
# name: (eval folder, ffmpeg arguments between input and output; None: stream copy)
EPISODES: dict[str, tuple[str, list[str] | None]] = {
    "dev": ("dev-episode", None),
    "seed": ("seed-episode", None),
    "dev-quiet": ("dev-episode", ["-af", "volume=0.8"]),
    "seed-quiet": ("seed-episode", ["-af", "volume=0.8"]),
    "dev-cut": ("dev-episode", ["-ss", "15"]),
    "seed-cut": ("seed-episode", ["-ss", "15"]),
}
CUT = {"dev-cut", "seed-cut"}  # their reference texts start earlier than their audio: no score


def make_episodes(eval_dir: Path, out: Path) -> None:
    """The six episodes and (for the uncut ones) their reference texts, in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    for name, (folder, args) in EPISODES.items():
        target = out / f"{name}.mp3"
        if not target.exists():
            source = eval_dir / folder / "episode.mp3"
            codec = ["-c", "copy"] if args is None else ["-ac", "1", "-b:a", "64k"]
            seek = args[:2] if args and args[0] == "-ss" else []
            filters = args if args and args[0] != "-ss" else []
            subprocess.run(
                [find_ffmpeg(), "-nostdin", "-loglevel", "error", "-y", *seek, "-i", str(source)]
                + filters
                + codec
                + [str(target)],
                check=True,
            )
        if name not in CUT:
            shutil.copyfile(eval_dir / folder / "reference.txt", out / f"{name}.txt")


def write_feed(out: Path, base: str) -> None:
    """feed.xml: one item per episode, oldest first in the order of EPISODES."""
    items = []
    for day, name in enumerate(EPISODES, start=1):
        transcript = (
            ""
            if name in CUT
            else f'<podcast:transcript url="{base}/{name}.txt" type="text/plain"/>'
        )
        items.append(
            f"<item><title>{escape(name)}</title><guid>bench-{name}</guid>"
            f'<enclosure url="{base}/{name}.mp3" type="audio/mpeg" length="1"/>'
            f"<pubDate>Mon, 0{day} Jun 2025 10:00:00 GMT</pubDate>{transcript}</item>"
        )
    (out / "feed.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" '
        'xmlns:podcast="https://podcastindex.org/namespace/1.0"><channel><title>Backfill bench'
        f"</title><link>{base}</link><description>bench</description>{''.join(items)}"
        "</channel></rss>"
    )


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}"


def run_sequential(
    base: str, work: Path, options: TranscribeOptions, repair: RepairPolicy
) -> tuple[float, dict[str, Any]]:
    """Each episode by itself, one after another (``run_episode``, as `podscribe transcribe`)."""
    started = time.perf_counter()
    texts, wers = {}, {}
    for name in EPISODES:
        ref = None if name in CUT else read_reference(f"{base}/{name}.txt", limits=LOCAL)
        result = run_episode(
            f"{base}/{name}.mp3",
            reference=ref,
            transcribe_options=options,
            episode_id=name,
            audio_root=work / "audio",
            transcripts_root=work / "out",
            fetch_limits=LOCAL,
            repair_policy=repair,
        )
        print(f"  sequential {name}: {time.perf_counter() - started:.1f} s so far", flush=True)
        texts[name] = result.transcript.text
        wers[name] = result.score.wer if result.score else None
    return time.perf_counter() - started, {"texts": texts, "wers": wers}


def run_backfill(
    base: str, work: Path, options: TranscribeOptions, repair: RepairPolicy
) -> tuple[float, dict[str, Any]]:
    """All six claimed from a fresh catalog and transcribed together (``backfill_feed``)."""
    started = time.perf_counter()
    feed = fetch_feed(f"{base}/feed.xml", limits=LOCAL)
    result = backfill_feed(
        feed,
        work / "catalog.db",
        BackfillOptions(
            transcribe=options,
            repair=repair,
            audio_root=work / "audio",
            transcripts_root=work / "out",
            fetch_limits=LOCAL,
        ),
    )
    elapsed = time.perf_counter() - started
    failed = [o for o in result.outcomes if o.state != "done"]
    if failed:
        raise SystemExit(f"backfill failed episodes: {failed}")
    texts = {o.title: o.result.transcript.text for o in result.done if o.result}
    wers = {
        o.title: o.result.score.wer if o.result and o.result.score else None for o in result.done
    }
    return elapsed, {"texts": texts, "wers": wers, "transcribe_s": result.transcribe_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--eval", type=Path, default=Path("../shared/eval"))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=0, help="0: automatic (8 on CPU)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/backfill-bench"))
    parser.add_argument(
        "--no-repair",
        action="store_true",
        help="Both modes without the repair pass (the same work either way, beam 5 on the CPU)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    episodes = args.work / "episodes"
    make_episodes(args.eval, episodes)
    httpd, base = serve(episodes)
    write_feed(episodes, base)
    options = TranscribeOptions(batch_size=args.batch_size)
    loaded = load_model(options)  # loaded once, before any timing
    print(f"model {loaded.info.name} on {loaded.device}; warming up", flush=True)
    repair = RepairPolicy(enabled=not args.no_repair)
    run_episode(
        f"{base}/dev-cut.mp3",  # the model's first batches, before any timing
        transcribe_options=options,
        repair_policy=RepairPolicy(enabled=False),
        episode_id="warm-up",
        audio_root=args.work / "warm" / "audio",
        transcripts_root=args.work / "warm" / "out",
        fetch_limits=LOCAL,
    )
    modes = {"sequential": run_sequential, "backfill": run_backfill}
    rows: list[dict[str, Any]] = []
    for r in range(args.rounds):
        order = list(modes) if r % 2 == 0 else list(reversed(modes))
        seconds: dict[str, float] = {}
        details: dict[str, dict[str, Any]] = {}
        for mode in order:
            work = args.work / f"round{r}" / mode
            shutil.rmtree(work, ignore_errors=True)
            seconds[mode], details[mode] = modes[mode](base, work, options, repair)
            print(f"round {r + 1} {mode}: {seconds[mode]:.1f} s", flush=True)
        same = sum(
            details["sequential"]["texts"][n] == details["backfill"]["texts"][n] for n in EPISODES
        )
        rows.append(
            {
                "round": r + 1,
                "order": order,
                "sequential_s": round(seconds["sequential"], 2),
                "backfill_s": round(seconds["backfill"], 2),
                "backfill_transcribe_s": round(details["backfill"]["transcribe_s"], 2),
                "sequential_eph": round(len(EPISODES) * 3600 / seconds["sequential"], 1),
                "backfill_eph": round(len(EPISODES) * 3600 / seconds["backfill"], 1),
                "ratio": round(seconds["sequential"] / seconds["backfill"], 3),
                "texts_equal": f"{same}/{len(EPISODES)}",
                "wers": {
                    n: [details[m]["wers"][n] for m in ("sequential", "backfill")]
                    for n in EPISODES
                    if n not in CUT
                },
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    httpd.shutdown()
    ratios = [row["ratio"] for row in rows]
    print(
        f"episodes/hour ratio backfill/sequential: median {statistics.median(ratios):.3f} "
        f"over {len(ratios)} round(s): {ratios}"
    )
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
