"""The openai-whisper engine for one chunk: ``whisper.transcribe`` over the chunk's samples
(the path for beam search, per-chunk language detection and ``batch_size=1`` without
``continue_in_window``), and the conversion of whisper's segment dicts into ``Segment`` values
that every engine shares."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.audio.decode import read_wav_samples
from pipeline.core.errors import TranscriptionError
from pipeline.core.types import Chunk, ChunkTranscript, Segment


def _decode_kwargs(options: TranscribeOptions, device: str) -> dict[str, Any]:
    fp16 = options.fp16 if options.fp16 is not None else device == "cuda"
    kwargs: dict[str, Any] = {
        "temperature": options.temperatures,
        "compression_ratio_threshold": options.compression_ratio_threshold,
        "logprob_threshold": options.logprob_threshold,
        "no_speech_threshold": options.no_speech_threshold,
        "condition_on_previous_text": options.condition_on_previous_text,
        "initial_prompt": options.initial_prompt,
        "language": options.language,
        "fp16": fp16 and device == "cuda",
        "verbose": None,
    }
    if options.beam_size is not None:
        kwargs["beam_size"] = options.beam_size
    return kwargs


def segments_from_whisper(
    raw_segments: Iterable[dict[str, Any]], chunk: Chunk
) -> tuple[Segment, ...]:
    """Wrap whisper's segment dicts, shifted from chunk time to episode time."""
    out = []
    for seg in raw_segments:
        text = str(seg["text"]).strip()
        if not text:
            continue
        start = min(chunk.start_s + float(seg["start"]), chunk.end_s)
        end = min(max(chunk.start_s + float(seg["end"]), start), chunk.end_s)
        out.append(
            Segment(
                start=round(start, 3),
                end=round(end, 3),
                text=text,
                chunk_index=chunk.index,
                avg_logprob=float(seg.get("avg_logprob", 0.0)),
                no_speech_prob=float(seg.get("no_speech_prob", 0.0)),
                compression_ratio=float(seg.get("compression_ratio", 0.0)),
                temperature=float(seg.get("temperature", 0.0)),
            )
        )
    return tuple(out)


def transcribe_chunk_whisper(
    chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel
) -> ChunkTranscript:
    """Transcribe one chunk WAV with ``whisper.transcribe``; times in episode seconds."""
    import torch
    import whisper

    try:
        samples = read_wav_samples(chunk.path)
    except OSError as exc:
        raise TranscriptionError(f"cannot read chunk {chunk.index} ({chunk.path}): {exc}") from exc
    started = time.perf_counter()
    torch.manual_seed(options.seed)  # the sampled fallbacks must not depend on chunk order
    try:
        result = whisper.transcribe(loaded.model, samples, **_decode_kwargs(options, loaded.device))
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(
            f"Whisper failed on chunk {chunk.index} ({chunk.path.name}): {exc}"
        ) from exc
    return ChunkTranscript(
        chunk_index=chunk.index,
        chunk_sha256=chunk.sha256,
        start_s=chunk.start_s,
        end_s=chunk.end_s,
        segments=segments_from_whisper(result["segments"], chunk),
        model=loaded.info,
        options=options.to_dict() | {"resolved_device": loaded.device},
        elapsed_s=round(time.perf_counter() - started, 4),
    )
