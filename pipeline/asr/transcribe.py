"""Transcribe chunks with whichever engine the options choose: the batched openai-whisper
decoder (``pipeline.asr.batch``), ``whisper.transcribe`` one chunk at a time
(``pipeline.asr.whisper``) or CTranslate2 (``pipeline.asr.ct2``).

Each chunk is at most 30 s (one Whisper window), cut inside a silence, and transcribed on its
own: chunks never condition on each other, so a chunk's text depends only on its audio, the
weights and these options (which is what makes single-chunk re-runs and caching sound).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pipeline.asr.loading import load_model
from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.asr.whisper import transcribe_chunk_whisper
from pipeline.core.types import Chunk, ChunkTranscript

__all__ = ["load_model", "transcribe_chunk", "transcribe_chunks"]


def transcribe_chunk(
    chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel | None = None
) -> ChunkTranscript:
    """Transcribe one chunk WAV; segment times come back in episode seconds."""
    loaded = loaded or load_model(options)
    if options.backend == "faster-whisper" or (
        options.continue_in_window and _batchable(options, loaded)
    ):
        # whisper.transcribe has no continue_in_window: the batched engine, with a batch of one.
        return transcribe_chunks([chunk], options, loaded=loaded)[0]
    return transcribe_chunk_whisper(chunk, options, loaded)


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
        from pipeline.asr.ct2 import LoadedCT2, transcribe_chunks_ct2  # an optional extra

        ct2 = loaded.model if isinstance(loaded.model, LoadedCT2) else None
        return transcribe_chunks_ct2(chunks, options, on_done=on_done, loaded=ct2)
    if options.batch_size != 1 and _batchable(options, loaded):
        from pipeline.asr.batch import transcribe_chunks_batched  # torch

        return transcribe_chunks_batched(chunks, options, on_done=on_done, loaded=loaded)
    results = []
    for chunk in chunks:
        result = transcribe_chunk_whisper(chunk, options, loaded)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results
