"""The openai-whisper engine for one chunk: ``whisper.transcribe`` over the chunk's samples
(the path for per-chunk language detection and ``batch_size=1`` without
``continue_in_window``), and the conversion of whisper's segment dicts into ``Segment`` values
that every engine shares."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import numpy as np

from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.asr.words import fit_words_to_sound, use_numpy_dtw
from pipeline.audio.analysis import sounding_center, sounding_frames
from pipeline.audio.decode import read_chunk_samples
from pipeline.core.errors import AudioError, TranscriptionError
from pipeline.core.types import Chunk, ChunkTranscript, Segment, Word


def _decode_kwargs(options: TranscribeOptions, device: str) -> dict[str, Any]:
    fp16 = options.fp16 if options.fp16 is not None else device == "cuda"
    kwargs: dict[str, Any] = {
        "temperature": options.temperatures,
        "compression_ratio_threshold": options.compression_ratio_threshold,
        "logprob_threshold": options.logprob_threshold,
        "no_speech_threshold": options.no_speech_threshold,
        "condition_on_previous_text": options.condition_on_previous_text,
        "initial_prompt": options.prompt(),
        "carry_initial_prompt": True,  # before every window, as the batched engine does
        "language": options.language,
        "fp16": fp16 and device == "cuda",
        "verbose": None,
    }
    if options.beam_size is not None:
        kwargs["beam_size"] = options.beam_size
    return kwargs


def segments_from_whisper(
    raw_segments: Iterable[dict[str, Any]],
    chunk: Chunk,
    context: bool = False,
    sounding: np.ndarray | None = None,
    keep_words: bool = True,
) -> tuple[Segment, ...]:
    """Wrap whisper's segment dicts, shifted from chunk time to episode time.

    Words (where whisper timed them) are fitted to ``sounding`` when it is given
    (``words.fit_words_to_sound``: no word starts or ends in the silence next to it), and a
    segment with words spans its words.

    ``context``: the times count from the start of the chunk's WAV *with* its context
    (``Chunk.context_before``), and only the words heard inside the chunk itself are kept, so
    a word heard across a cut by both chunks (context on both sides) lands in exactly one of
    them; with context after the chunk only (``ChunkOptions.long_after_s``) the next chunk
    still starts cold at the cut, as without context. Where a word is heard: the middle of
    its sounding frames (``sounding``: ``analysis.sounding_frames`` of the WAV), else of its
    times. Whisper stretches the word next to a pause over the pause, and the cut is in the
    pause: by its times alone that word would fall on both sides, or on neither. A segment
    without word timings is kept when its middle is inside.

    ``keep_words`` False: the words were timed only to keep the chunk's own (no word
    timestamps were asked for), and the segments come back without them.
    """
    offset = chunk.start_s - (chunk.context_before_s if context else 0.0)

    def heard_inside(w: Word) -> bool:
        heard = None
        if sounding is not None:
            heard = sounding_center(sounding, w.start - offset, w.end - offset)
        return _inside(offset + heard if heard is not None else (w.start + w.end) / 2, chunk)

    out = []
    for seg in raw_segments:
        start = offset + float(seg["start"])
        end = offset + float(seg["end"])
        text = str(seg["text"]).strip()
        words = _words(seg.get("words"), offset)
        if words and sounding is not None:
            words = fit_words_to_sound(words, sounding, offset)
            start, end = words[0].start, words[-1].end
        if context:
            if words is not None:
                inside = tuple(w for w in words if heard_inside(w))
                if len(inside) < len(words):  # trimmed at a cut: the kept words' text, times
                    text = "".join(w.text for w in inside).strip()
                    if inside:
                        start, end = inside[0].start, inside[-1].end
                words = inside
            elif not _inside((start + end) / 2, chunk):
                continue
        if not text:
            continue
        start = min(max(start, chunk.start_s), chunk.end_s)
        end = min(max(end, start), chunk.end_s)
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
                words=words if keep_words else None,
            )
        )
    return tuple(out)


def has_context(chunk: Chunk) -> bool:
    """Whether the chunk's WAV holds neighbouring audio (then words are timed and filtered)."""
    return chunk.context_before > 0 or chunk.context_after > 0


def _inside(time: float, chunk: Chunk) -> bool:
    return chunk.start_s <= time < chunk.end_s


def _words(raw: Any, offset: float) -> tuple[Word, ...] | None:
    """Whisper's word dicts (times from the WAV's start) as Words in episode time."""
    if raw is None:
        return None
    return tuple(
        Word(
            start=round(offset + float(w["start"]), 3),
            end=round(offset + float(w["end"]), 3),
            text=str(w["word"]),
            probability=round(float(w["probability"]), 4),
        )
        for w in raw
    )


def time_words(
    model: Any, samples: np.ndarray, segments: list[dict[str, Any]], language: str
) -> None:
    """Give ``whisper.transcribe``'s segments their words, window by window (whisper's own
    alignment, as ``transcribe(word_timestamps=True)`` does), after decoding: there, the
    next window would start after the last word instead of the last timestamp, so timing
    words would change the text; here it does not, as on the batched engine."""
    import torch
    from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
    from whisper.timing import add_word_timestamps
    from whisper.tokenizer import get_tokenizer

    use_numpy_dtw()
    tokenizer = get_tokenizer(
        model.is_multilingual,
        num_languages=model.num_languages,
        language=language,
        task="transcribe",
    )
    mel = log_mel_spectrogram(torch.from_numpy(samples), model.dims.n_mels, padding=N_SAMPLES)
    content_frames = mel.shape[-1] - N_FRAMES
    dtype = next(model.parameters()).dtype
    windows: dict[int, list[dict[str, Any]]] = {}
    for seg in segments:
        windows.setdefault(int(seg["seek"]), []).append(seg)
    last_speech = 0.0
    for seek, group in sorted(windows.items()):
        size = min(N_FRAMES, content_frames - seek)
        window = pad_or_trim(mel[:, seek : seek + size], N_FRAMES).to(model.device, dtype)
        with torch.inference_mode():
            add_word_timestamps(
                segments=group,
                model=model,
                tokenizer=tokenizer,
                mel=window,
                num_frames=size,
                last_speech_timestamp=last_speech,
            )
        ends = [w["end"] for seg in group for w in seg.get("words", [])]
        last_speech = ends[-1] if ends else last_speech


def transcribe_chunk_whisper(
    chunk: Chunk, options: TranscribeOptions, loaded: LoadedModel
) -> ChunkTranscript:
    """Transcribe one chunk WAV with ``whisper.transcribe``; times in episode seconds."""
    import torch
    import whisper

    try:
        samples = read_chunk_samples(chunk, context=True)
    except (OSError, AudioError) as exc:
        raise TranscriptionError(f"cannot read chunk {chunk.number} ({chunk.path}): {exc}") from exc
    started = time.perf_counter()
    torch.manual_seed(options.seed)  # the sampled fallbacks must not depend on chunk order
    try:
        kwargs = _decode_kwargs(options, loaded.device)
        context = has_context(chunk)
        # Context needs the words (a chunk keeps only the words heard inside it).
        timed = context or options.word_timestamps
        result = whisper.transcribe(loaded.model, samples, **kwargs)
        if timed:
            time_words(loaded.model, samples, result["segments"], result["language"])
    except (RuntimeError, ValueError) as exc:
        raise TranscriptionError(
            f"Whisper failed on chunk {chunk.number} ({chunk.path.name}): {exc}"
        ) from exc
    return ChunkTranscript(
        chunk_index=chunk.index,
        chunk_sha256=chunk.sha256,
        start_s=chunk.start_s,
        end_s=chunk.end_s,
        segments=segments_from_whisper(
            result["segments"],
            chunk,
            context,
            sounding_frames(samples, chunk.own_span) if timed else None,
            keep_words=options.word_timestamps,
        ),
        model=loaded.info,
        options=options.to_dict()
        | {"resolved_device": loaded.device, "engine": "whisper.transcribe"},
        elapsed_s=round(time.perf_counter() - started, 4),
    )
