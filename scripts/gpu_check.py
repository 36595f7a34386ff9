"""Transcription-stage speed and output on a lent GPU (device tool), from a decoded 16 kHz WAV.

The GPU machine has torch but no ffmpeg and no internet, so this starts from the decoded episode
(made here with ffmpeg) and runs only what needs the GPU: chunking (pydub, no ffmpeg), batched
transcription on cuda (timed, after a warm-up), and openai-whisper's own ``transcribe()`` on the
same samples as the baseline. Transcripts go to OUT as JSON and are scored back here, with the
same normaliser as every other number (``scripts/gpu_score.py``).

    python3 scripts/gpu_check.py WAV CHECKPOINT OUT [--repeat 3] [--batch-size 0]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.audio import read_wav_samples, wav_num_samples
from pipeline.chunk import ChunkOptions, chunk_audio
from pipeline.store import sha256_file
from pipeline.transcribe import TranscribeOptions, load_model, transcribe_chunks
from pipeline.transcript import merge_transcripts
from pipeline.types import DecodedAudio, to_dict


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("wav", type=Path)
    parser.add_argument("checkpoint")
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script here")
    args = parser.parse_args()

    import torch
    import whisper

    args.out.mkdir(parents=True, exist_ok=True)
    decoded = DecodedAudio(args.wav, wav_num_samples(args.wav), sha256_file(args.wav))
    t0 = time.perf_counter()
    manifest = chunk_audio(decoded, args.out / "audio", "dev", ChunkOptions())
    chunk_s = time.perf_counter() - t0
    options = TranscribeOptions(model=args.checkpoint, device=args.device, fp16=args.fp16,
                                batch_size=args.batch_size)
    loaded = load_model(options)
    gpu = args.device == "cuda"
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    name = torch.cuda.get_device_name() if gpu else "cpu"
    print(f"{name}: {len(manifest.chunks)} chunks of "
          f"{decoded.duration_s:.1f} s, chunking {chunk_s:.2f} s")

    transcribe_chunks(manifest.chunks[:4], options, loaded=loaded)  # warm-up: kernels, clocks
    runs = []
    for n in range(args.repeat):
        sync()
        t0 = time.perf_counter()
        results = transcribe_chunks(manifest.chunks, options, loaded=loaded)
        sync()
        elapsed = time.perf_counter() - t0
        runs.append(elapsed)
        print(f"pipeline transcription run {n + 1}: {elapsed:.3f} s, "
              f"RTFx {decoded.duration_s / elapsed:.1f}")
        transcript = merge_transcripts("dev", decoded.duration_s, results)
        (args.out / f"pipeline-{n + 1}.json").write_text(json.dumps(to_dict(transcript)))

    samples = read_wav_samples(args.wav)
    base = []
    for n in range(args.repeat):
        sync()
        t0 = time.perf_counter()
        out = whisper.transcribe(loaded.model, samples, fp16=args.fp16 and gpu, language="en")
        sync()
        base.append(time.perf_counter() - t0)
        print(f"whisper transcribe() run {n + 1}: {base[-1]:.3f} s, "
              f"RTFx {decoded.duration_s / base[-1]:.1f}")
    (args.out / "baseline.txt").write_text(out["text"])
    summary = {
        "device": name,
        "torch": torch.__version__,
        "duration_s": decoded.duration_s,
        "chunks": len(manifest.chunks),
        "batch_size": args.batch_size,
        "fp16": args.fp16,
        "pipeline_transcribe_s": runs,
        "pipeline_rtfx_best": decoded.duration_s / min(runs),
        "pipeline_rtfx_median": decoded.duration_s / sorted(runs)[len(runs) // 2],
        "baseline_s": base,
        "baseline_rtfx_best": decoded.duration_s / min(base),
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
