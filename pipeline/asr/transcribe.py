"""Transcribe chunks with whichever engine the options choose: the batched openai-whisper
decoder (``pipeline.asr.batch``), ``whisper.transcribe`` one chunk at a time
(``pipeline.asr.whisper``) or CTranslate2 (``pipeline.asr.ct2``).

Each chunk is at most 30 s (one Whisper window), or in a long episode a few whole windows
(``ChunkOptions.long_chunk_s``), cut inside a silence, and transcribed on its own: by
default chunks never condition on each other, so a chunk's text depends only on its audio,
the weights and these options (which is what makes single-chunk re-runs and caching
sound). With ``condition_chunks`` it also depends on the previous chunk's text, which
depends on the same things in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pipeline.asr.loading import load_model
from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.asr.whisper import transcribe_chunk_whisper
from pipeline.audio.analysis import SILENT_PEAK_DBFS, is_silent
from pipeline.audio.decode import read_chunk_samples
from pipeline.core.errors import AudioError, TranscriptionError
from pipeline.core.types import Chunk, ChunkTranscript

__all__ = ["load_model", "silent_chunk_transcript", "transcribe_chunk", "transcribe_chunks"]


def silent_chunk_transcript(
    chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel
) -> ChunkTranscript | None:
    """An empty transcript for a chunk with nothing to hear (``audio.analysis.is_silent``),
    without running Whisper; None for any other chunk. Whisper over silence can only invent
    text, and two hours of it would cost 240 encoder passes for nothing. Judged on the chunk's
    own samples: the neighbouring audio its WAV may hold is heard, never transcribed into it."""
    try:
        samples = read_chunk_samples(chunk)
    except (OSError, AudioError) as exc:
        raise TranscriptionError(f"cannot read chunk {chunk.number} ({chunk.path}): {exc}") from exc
    if not is_silent(samples):
        return None
    return ChunkTranscript(
        chunk_index=chunk.index,
        chunk_sha256=chunk.sha256,
        start_s=chunk.start_s,
        end_s=chunk.end_s,
        segments=(),
        model=loaded.info,
        options=options.to_dict()
        | {
            "resolved_device": loaded.device,
            "skipped": f"silent (peak <= {SILENT_PEAK_DBFS} dBFS)",
        },
        elapsed_s=0.0,
    )


def transcribe_chunk(
    chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel | None = None
) -> ChunkTranscript:
    """Transcribe one chunk WAV; segment times come back in episode seconds."""
    loaded = loaded or load_model(options)
    silent = silent_chunk_transcript(chunk, options, loaded)
    if silent is not None:
        return silent
    if options.backend == "faster-whisper" or (
        options.continue_in_window and _batchable(options, loaded)
    ):
        # whisper.transcribe has no continue_in_window: the batched engine, with a batch of one.
        return transcribe_chunks([chunk], options, loaded=loaded)[0]
    return transcribe_chunk_whisper(chunk, options, loaded)


def _batchable(options: TranscribeOptions, loaded: LoadedModel) -> bool:
    # Beam search is batched too (decode_task.BatchDecodingTask keeps each window's beams apart):
    # on whisper.transcribe's path it would lose continue_in_window, and the chunk's speech
    # end. Only per-chunk language detection (a multilingual model without a language) needs
    # whisper.transcribe: the windows of a batch share one SOT sequence, so one language.
    return options.language is not None or not loaded.model.is_multilingual


def transcribe_chunks(
    chunks: Sequence[Chunk],
    options: TranscribeOptions,
    on_done: Callable[[ChunkTranscript], None] | None = None,
    loaded: LoadedModel | None = None,
    known: Mapping[int, ChunkTranscript] | None = None,
) -> list[ChunkTranscript]:
    """Transcribe chunks, calling ``on_done`` as each finishes (for progress bars).

    With ``options.batch_size`` other than 1, chunk windows are decoded in batches
    (``pipeline.asr.batch``); results come back in chunk order either way. Silent chunks get
    an empty transcript without Whisper (``silent_chunk_transcript``). With
    ``options.condition_chunks``, ``known`` (by chunk index: transcripts of this episode's
    other chunks, say from an earlier run) gives the text a chunk whose predecessor is not
    among ``chunks`` is conditioned on.
    """
    loaded = loaded or load_model(options)
    # By position, not by chunk index: the chunks may come from several episodes (a backfill
    # transcribes a whole backlog's chunks together), whose indices repeat.
    results: list[ChunkTranscript | None] = [None] * len(chunks)
    heard: list[int] = []
    for pos, chunk in enumerate(chunks):
        result = silent_chunk_transcript(chunk, options, loaded)
        if result is None:
            heard.append(pos)
            continue
        results[pos] = result
        if on_done is not None:
            on_done(result)
    if heard:
        decoded = _transcribe_heard([chunks[p] for p in heard], options, on_done, loaded, known)
        for pos, result in zip(heard, decoded, strict=True):
            results[pos] = result
    return [r for r in results if r is not None]


def _transcribe_heard(
    chunks: Sequence[Chunk],
    options: TranscribeOptions,
    on_done: Callable[[ChunkTranscript], None] | None,
    loaded: LoadedModel,
    known: Mapping[int, ChunkTranscript] | None = None,
) -> list[ChunkTranscript]:
    if options.backend == "faster-whisper":
        from pipeline.asr.ct2 import LoadedCT2, transcribe_chunks_ct2  # an optional extra

        ct2 = loaded.model if isinstance(loaded.model, LoadedCT2) else None
        return transcribe_chunks_ct2(chunks, options, on_done=on_done, loaded=ct2)
    # Conditioned chunks take the batched engine even one at a time (it hands text on).
    if (options.batch_size != 1 or options.condition_chunks) and _batchable(options, loaded):
        from pipeline.asr.batch import transcribe_chunks_batched  # torch

        return transcribe_chunks_batched(
            chunks, options, on_done=on_done, loaded=loaded, known=known
        )
    results = []
    for chunk in chunks:
        result = transcribe_chunk_whisper(chunk, options, loaded)
        results.append(result)
        if on_done is not None:
            on_done(result)
    return results
