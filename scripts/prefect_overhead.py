"""Prefect's overhead on one episode: the same pipeline work with and without the flow.

In one process, against a temporary Prefect server (SQLite): the model is loaded first (so
neither side pays for it), then, alternately, the plain pipeline (prepare → every chunk
announced to the shared micro-batcher, then verified and submitted to it from as many threads
as the flow's task runner has → finish) and the ``transcribe_episode`` flow (the same calls,
the chunks as tasks: persisted results, the device concurrency limit, artifacts). Each side
cuts into its own fresh folders.

    .venv/bin/python scripts/prefect_overhead.py [SOURCE REFERENCE] [--max-chunk-s 30] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

ROOT = Path(__file__).resolve().parent.parent


def run_plain(source: str, reference: str, max_chunk_s: float, work: Path) -> tuple[float, int]:
    """The pipeline without Prefect; returns (seconds, chunks)."""
    from flows.settings import load_settings
    from pipeline.asr.microbatch import shared_batcher
    from pipeline.asr.options import TranscribeOptions
    from pipeline.audio.chunk import ChunkOptions, verify_chunk
    from pipeline.episode import finish_episode, prepare_episode
    from pipeline.sources.reference import read_reference

    started = time.perf_counter()
    options = TranscribeOptions()
    manifest = prepare_episode(
        source,
        "overhead",
        work / "audio",
        ChunkOptions(
            max_chunk_s=max_chunk_s,
            min_chunk_s=min(5.0, max_chunk_s),
            search_s=min(10.0, max_chunk_s),
        ),
    )
    ref = read_reference(reference)

    settings = load_settings()
    batcher = shared_batcher()
    ahead = manifest.chunks[: batcher.batch_size(options)]  # as run_chunks does
    batcher.submit_ahead(ahead, options)
    batcher.expect(min(len(manifest.chunks), settings.device_slots) - len(ahead))

    def one(chunk):
        verify_chunk(chunk, manifest.episode_id)
        return batcher.submit(chunk, options).result()

    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        transcripts = list(pool.map(one, manifest.chunks))
    finish_episode(
        manifest,
        transcripts,
        ref,
        work / "transcripts" / "overhead",
        elapsed_s=time.perf_counter() - started,
    )
    return time.perf_counter() - started, len(manifest.chunks)


def run_flow(source: str, reference: str, max_chunk_s: float, work: Path) -> tuple[float, int]:
    """The same episode through the transcribe_episode flow; returns (seconds, chunks)."""
    from flows.episode import transcribe_episode

    for name, sub in (("AUDIO_ROOT", "audio"), ("TRANSCRIPTS_ROOT", "transcripts")):
        os.environ[f"PODSCRIBE_{name}"] = str(work / sub)
    os.environ["PODSCRIBE_DB"] = str(work / "catalog.db")
    started = time.perf_counter()
    summary = transcribe_episode(
        source=source, episode_id="overhead", reference=reference, max_chunk_s=max_chunk_s
    )
    return time.perf_counter() - started, summary["chunks"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("source", nargs="?", default=str(ROOT / "tests/fixtures/episode.mp3"))
    parser.add_argument("reference", nargs="?", default=str(ROOT / "tests/fixtures/episode.txt"))
    parser.add_argument("--max-chunk-s", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from prefect.testing.utilities import prefect_test_harness

    from pipeline.asr.loading import load_model
    from pipeline.asr.options import TranscribeOptions

    load_model(TranscribeOptions())  # neither side pays for loading weights
    plain: list[float] = []
    flowed: list[float] = []
    with prefect_test_harness(server_startup_timeout=120), tempfile.TemporaryDirectory() as tmp:
        # One results folder for every flow run, as a deployed worker has (its storage block
        # is saved once per process); no result is shared: their cache key holds the run id.
        os.environ["PODSCRIBE_RESULTS_DIR"] = str(Path(tmp) / "results")
        warm = Path(tmp) / "warm"
        run_plain(args.source, args.reference, args.max_chunk_s, warm)  # warm torch kernels
        run_flow(args.source, args.reference, args.max_chunk_s, warm / "flow")
        for i in range(args.repeats):
            for side, runs, fn in (("plain", plain, run_plain), ("flow", flowed, run_flow)):
                work = Path(tmp) / f"{side}-{i}"
                seconds, chunks = fn(args.source, args.reference, args.max_chunk_s, work)
                runs.append(seconds)
                print(f"{side:5s} run {i + 1}: {seconds:7.2f} s  ({chunks} chunks)", flush=True)
                shutil.rmtree(work, ignore_errors=True)
    p, f = statistics.median(plain), statistics.median(flowed)
    overhead = f - p
    print(f"plain pipeline   median {p:.2f} s")
    print(f"prefect flow     median {f:.2f} s")
    print(
        f"overhead per episode flow run: {overhead:.2f} s ({100 * overhead / f:.1f}% of the "
        f"flow's time); per chunk task: {1000 * overhead / chunks:.0f} ms over {chunks} chunks"
    )
    pairs = [fl - pl for pl, fl in zip(plain, flowed, strict=True)]
    print(
        "per pair (flow - plain): "
        + ", ".join(f"{d:.2f}" for d in pairs)
        + f" s; median {statistics.median(pairs):.2f} s"
    )


if __name__ == "__main__":
    main()
