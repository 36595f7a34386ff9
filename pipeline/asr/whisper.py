"""Transcribe chunks with openai-whisper; the only stage that imports torch and whisper.

Each chunk is at most 30 s (one Whisper window), cut inside a silence, and transcribed on its
own: chunks never condition on each other, so a chunk's text depends only on its audio, the
weights and these options (which is what makes single-chunk re-runs and caching sound).
Inside a chunk, ``whisper.transcribe`` seeks past the last timestamp token and decodes the rest,
so speech after an early "continue from here" timestamp is not dropped.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.audio.decode import read_wav_samples
from pipeline.core.errors import OptionsError, TranscriptionError
from pipeline.asr.weights import load_whisper_model, resolve_model
from pipeline.core.types import Chunk, ChunkTranscript, ModelInfo, Segment

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("openai-whisper", "faster-whisper")  # faster-whisper: pipeline/asr/ct2.py
# Whisper's own defaults for deciding that a decode failed and a hotter one should be tried.
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
MAX_BATCH_SIZE = 256  # windows per forward pass; more only costs memory


@dataclass(frozen=True)
class TranscribeOptions:
    """How chunks are transcribed; recorded with every result."""

    # A name `podscribe models` lists (tiny.en, base, ...) or a path to an openai-whisper .pt.
    model: str = "tiny.en"
    # "auto" picks cuda when torch sees a GPU, else cpu.
    device: str = "auto"
    # Spoken language; None lets a multilingual model detect it per chunk.
    language: str | None = "en"
    # None: fp16 on cuda, fp32 on cpu (CPU kernels have no fp16 path).
    fp16: bool | None = None
    # None decodes greedily; a number uses beam search at temperature 0.
    beam_size: int | None = None
    # Whisper's fallback ladder: hotter decodes only when a window looks like a failure
    # (repetitive or improbable). Sampling is seeded per chunk, so results are reproducible.
    temperatures: tuple[float, ...] = DEFAULT_TEMPERATURES
    # Seed for the sampled fallbacks; each chunk is seeded with it before decoding.
    seed: int = 0
    # Conditioning on earlier windows of the same chunk; off because it feeds loops
    # (../shared/eval: 172% WER on robotic speech with it on at temperature 0).
    condition_on_previous_text: bool = False
    # Fallback triggers and the no-speech gate (Whisper's defaults).
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    # Optional text (names, jargon) given to the decoder as context for every chunk.
    initial_prompt: str | None = None
    # Chunk windows decoded together by `transcribe_chunks` (pipeline/asr/batch.py); 1 decodes each
    # chunk alone (with whisper.transcribe when continue_in_window is off); 0 picks a size
    # from free GPU memory (8 on CPU).
    # A chunk's text does not depend on it (see BENCHMARKS.md for the floating-point caveat).
    batch_size: int = 8
    # Which engine runs the model: openai-whisper (torch) or faster-whisper (CTranslate2 int8
    # on CPU, reading the CTranslate2 weights directly; greedy/beam at temperature 0 only).
    backend: str = "openai-whisper"
    # When Whisper ends a window on a lone "next segment starts here" timestamp although the
    # chunk's speech goes on for >= 0.5 s after it, decode on in the same window (EOT is held
    # back there) instead of encoding a new window from that timestamp as transcribe() does.
    # A chunk fits one window, so the rest is already in view: one encoder pass saved per
    # such stop, and the words are decoded with their context (dev episode: 16 -> 12 windows,
    # WER 5.56% -> 4.99%; BENCHMARKS.md). False: transcribe()'s seek exactly.
    continue_in_window: bool = True

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise OptionsError(
                f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}"
            )
        if not self.model.strip():
            raise OptionsError("model must not be empty: use a name `podscribe models` lists")
        if self.device not in DEVICES:
            raise OptionsError(f"device must be one of {', '.join(DEVICES)}, not {self.device!r}")
        if self.beam_size is not None and not 1 <= self.beam_size <= 32:
            raise OptionsError(f"beam_size must be between 1 and 32, not {self.beam_size}")
        temps = tuple(float(t) for t in self.temperatures)
        if not temps or any(t < 0 or t > 2 for t in temps) or list(temps) != sorted(temps):
            raise OptionsError(
                f"temperatures must be a non-empty rising list within [0, 2], not {temps}"
            )
        object.__setattr__(self, "temperatures", temps)
        if not 0 <= self.batch_size <= MAX_BATCH_SIZE:
            raise OptionsError(
                f"batch_size must be between 1 and {MAX_BATCH_SIZE} (or 0: automatic), "
                f"not {self.batch_size}"
            )
        if self.model.endswith(".en") and self.language not in ("en", None):
            raise OptionsError(f"model {self.model} is English-only: language must be 'en'")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["temperatures"] = list(self.temperatures)
        return d


# How much of a chunk's speech must lie after a "continue from here" timestamp pair for decoding
# to go on in the same window (continue_in_window); a shorter rest gets a window of its own.
CONTINUE_SPEECH_AHEAD_S = 0.5
TIMESTAMP_S = 0.02  # one Whisper timestamp token


def continue_limit(speech_end_s: float, window_start_s: float, window_s: float) -> int:
    """The timestamp index, in a window that starts ``window_start_s`` into the chunk and holds
    ``window_s`` of it, before which a timestamp pair may not end that window: the one
    ``CONTINUE_SPEECH_AHEAD_S`` before the chunk's speech ends (``quality.speech_end_s``: music,
    noise and silence do not count); 0 when the window holds no such speech."""
    ahead = min(speech_end_s, window_start_s + window_s) - window_start_s - CONTINUE_SPEECH_AHEAD_S
    return max(0, int(ahead / TIMESTAMP_S))


def resolve_device(device: str) -> str:
    """Turn "auto" into "cuda" or "cpu"; fail clearly when cuda is asked for but absent."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TranscriptionError(
            "--device cuda was asked for but torch sees no CUDA GPU: use --device cpu or auto"
        )
    return device


@dataclass(frozen=True)
class LoadedModel:
    """A Whisper model on its device, with the facts recorded in results."""

    model: Any  # whisper.model.Whisper, or a backend_ct2.LoadedCT2 for faster-whisper
    info: ModelInfo
    device: str


def load_model(options: TranscribeOptions) -> LoadedModel:
    """Resolve and load the options' model once per process (models caches it)."""
    if options.backend == "faster-whisper":
        from pipeline.asr.ct2 import load_ct2_model

        ct2 = load_ct2_model(options.model, options.device)
        return LoadedModel(model=ct2, info=ct2.info, device=ct2.device)
    device = resolve_device(options.device)
    info = resolve_model(options.model)
    return LoadedModel(model=load_whisper_model(info, device), info=info, device=device)


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


def transcribe_chunk(
    chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel | None = None
) -> ChunkTranscript:
    """Transcribe one chunk WAV; segment times come back in episode seconds."""
    if options.backend == "faster-whisper":
        return transcribe_chunks([chunk], options, loaded=loaded)[0]
    import torch
    import whisper

    loaded = loaded or load_model(options)
    if options.continue_in_window and _batchable(options, loaded):
        # whisper.transcribe has no such rule: the batched engine, with a batch of one.
        from pipeline.asr.batch import transcribe_chunks_batched

        return transcribe_chunks_batched([chunk], options, loaded=loaded)[0]
    try:
        samples = read_wav_samples(chunk.path)
    except OSError as exc:
        raise TranscriptionError(f"cannot read chunk {chunk.index} ({chunk.path}): {exc}") from exc
    started = time.perf_counter()
    torch.manual_seed(options.seed)  # the sampled fallbacks must not depend on chunk order
    try:
        result = whisper.transcribe(
            loaded.model, samples, **_decode_kwargs(options, loaded.device)
        )
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


def _batchable(options: TranscribeOptions, loaded: LoadedModel) -> bool:
    # Beam search and per-chunk language detection stay on whisper.transcribe's path.
    return options.beam_size is None and (
        options.language is not None or not loaded.model.is_multilingual
    )


def transcribe_chunks(
    chunks: Sequence[Chunk],
    options: TranscribeOptions,
    on_done: Callable[[ChunkTranscript], None] | None = None,
    loaded: LoadedModel | None = None,
) -> list[ChunkTranscript]:
    """Transcribe chunks, calling ``on_done`` as each finishes (for progress bars).

    With ``options.batch_size`` other than 1, chunk windows are decoded in batches
    (``pipeline.asr.batch``); results come back in chunk order either way.
    """
    loaded = loaded or load_model(options)
    if options.backend == "faster-whisper":
        from pipeline.asr.ct2 import LoadedCT2, transcribe_chunks_ct2

        ct2 = loaded.model if isinstance(loaded.model, LoadedCT2) else None
        return transcribe_chunks_ct2(chunks, options, on_done=on_done, loaded=ct2)
    if options.batch_size != 1 and _batchable(options, loaded):
        from pipeline.asr.batch import transcribe_chunks_batched

        return transcribe_chunks_batched(chunks, options, on_done=on_done, loaded=loaded)
    results = []
    for chunk in chunks:
        result = transcribe_chunk(chunk, options, loaded)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results
