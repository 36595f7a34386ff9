"""Transcription-stage speed and output on a lent GPU (device tool), from decoded 16 kHz WAVs.

The GPU machine has torch but no ffmpeg and no internet, so this starts from decoded episodes
(made here with ffmpeg) and runs only what needs the GPU: chunking (pydub, no ffmpeg), batched
transcription on cuda (timed, after a warm-up), and openai-whisper's own ``transcribe()`` on the
same samples as the baseline. For each episode it times the default GPU path (greedy steps over
a static KV cache, one CUDA graph per step: pipeline.asr.static_decode) and the eager batched loop
(``static=False``), and writes every transcript to OUT as JSON, scored back here with the same
normaliser as every other number (``scripts/gpu_score.py OUT/<name> REFERENCE``).

    python3 scripts/gpu_check.py CHECKPOINT OUT NAME=WAV [NAME=WAV ...] [--repeat 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import pipeline.asr.batch
from pipeline.asr.loading import load_model
from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.asr.transcribe import transcribe_chunks
from pipeline.audio.analysis import speech_end_s
from pipeline.audio.chunk import ChunkOptions, chunk_audio
from pipeline.audio.decode import read_wav_samples, wav_num_samples
from pipeline.core.store import sha256_file
from pipeline.core.transcript import merge_transcripts
from pipeline.core.types import DecodedAudio, to_dict

_DECODE = pipeline.asr.batch.decode_batch


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed_runs(
    label: str,
    manifest: Any,
    options: TranscribeOptions,
    loaded: LoadedModel,
    repeat: int,
    out: Path,
    duration_s: float,
    static: bool | None,
) -> list[float]:
    pipeline.asr.batch.decode_batch = functools.partial(_DECODE, static=static)  # type: ignore
    try:
        transcribe_chunks(manifest.chunks, options, loaded=loaded)  # graphs captured, warm
        runs = []
        for n in range(repeat):
            _sync()
            t0 = time.perf_counter()
            results = transcribe_chunks(manifest.chunks, options, loaded=loaded)
            _sync()
            runs.append(time.perf_counter() - t0)
            print(
                f"{label} run {n + 1}: {runs[-1]:.3f} s, RTFx {duration_s / runs[-1]:.1f}",
                flush=True,
            )
        transcript = merge_transcripts(label, duration_s, results)
        (out / f"pipeline-{label}.json").write_text(json.dumps(to_dict(transcript)))
        return runs
    finally:
        pipeline.asr.batch.decode_batch = _DECODE  # type: ignore


def check_episode(
    name: str,
    wav: Path,
    loaded: LoadedModel,
    options: TranscribeOptions,
    out: Path,
    repeat: int,
    seek_too: bool = False,
) -> dict[str, Any]:
    import whisper

    out.mkdir(parents=True, exist_ok=True)
    decoded = DecodedAudio(wav, wav_num_samples(wav), sha256_file(wav))
    manifest = chunk_audio(decoded, Path(tempfile.mkdtemp()), name, ChunkOptions())
    duration = decoded.duration_s
    print(f"{name}: {len(manifest.chunks)} chunks of {duration:.1f} s", flush=True)
    graph = _timed_runs("graph", manifest, options, loaded, repeat, out, duration, None)
    extra: dict[str, Any] = {}
    if seek_too:  # the same path with transcribe()'s seek instead of continue_in_window
        seek = _timed_runs(
            "graph-seek",
            manifest,
            dataclasses.replace(options, continue_in_window=False),
            loaded,
            repeat,
            out,
            duration,
            None,
        )
        t0 = time.perf_counter()
        for chunk in manifest.chunks:
            speech_end_s(read_wav_samples(chunk.path))
        extra = {"graph_seek_s": seek, "speech_end_all_chunks_s": time.perf_counter() - t0}
        print(
            f"speech_end_s of {len(manifest.chunks)} chunks on the host: "
            f"{extra['speech_end_all_chunks_s']:.3f} s",
            flush=True,
        )
    eager = _timed_runs(
        "eager", manifest, options, loaded, max(1, repeat - 1), out, duration, False
    )
    samples = read_wav_samples(wav)
    base = []
    for n in range(max(1, repeat - 1)):
        _sync()
        t0 = time.perf_counter()
        result = whisper.transcribe(
            loaded.model, samples, fp16=loaded.device == "cuda", language="en"
        )
        _sync()
        base.append(time.perf_counter() - t0)
        print(
            f"whisper transcribe() run {n + 1}: {base[-1]:.3f} s, RTFx {duration / base[-1]:.1f}",
            flush=True,
        )
    (out / "baseline.txt").write_text(result["text"])
    best = sorted(graph)[len(graph) // 2]
    return {
        "episode": name,
        "duration_s": duration,
        "chunks": len(manifest.chunks),
        "graph_s": graph,
        "graph_rtfx_median": duration / best,
        "eager_s": eager,
        "eager_rtfx_median": duration / sorted(eager)[len(eager) // 2],
        "baseline_s": base,
        "baseline_rtfx_best": duration / min(base),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("out", type=Path)
    parser.add_argument("episodes", nargs="+", help="NAME=WAV")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script here")
    parser.add_argument(
        "--seek-too",
        action="store_true",
        help="also time the graph path with continue_in_window off",
    )
    parser.add_argument("--warm-up-s", type=float, default=6.0)
    args = parser.parse_args()

    import torch

    gpu = args.device == "cuda"
    options = TranscribeOptions(
        model=args.checkpoint, device=args.device, fp16=gpu, batch_size=args.batch_size
    )
    loaded = load_model(options)
    if gpu:
        a = torch.randn(4096, 4096, device="cuda", dtype=torch.float16)
        t = time.time()
        while time.time() - t < args.warm_up_s:  # a cold GPU idles at a low clock: ramp it up first
            a @ a
        torch.cuda.synchronize()
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if gpu else "cpu",
        "torch": torch.__version__,
        "episodes": [],
    }
    for spec in args.episodes:
        name, wav = spec.split("=", 1)
        result = check_episode(
            name, Path(wav), loaded, options, args.out / name, args.repeat, args.seek_too
        )
        summary["episodes"].append(result)
        print(json.dumps(result), flush=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
