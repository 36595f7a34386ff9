"""Batched openai-whisper transcription: chunk windows scheduled onto batched decoding.

A window is at most 30 s of one chunk (a long episode's chunk holds a few, decoded one after
the other, each from where Whisper ended the last), so each window is its own padded 30 s
log-mel, and windows of different chunks share one encoder and decoder pass
(``pipeline.asr.decode_task.decode_batch``). Windows are scheduled, not chunks:

- when Whisper stops a window early on a "continue from here" timestamp, the rest of that chunk
  becomes a new window that joins the next batch (the seek logic of ``whisper.transcribe``,
  which single-pass batch decoding lacks: ../shared/eval);
- unless the chunk's speech goes on after that timestamp (``continue_in_window``, the default):
  a chunk of 30 s or less is all in the window already, so EOT is held back there and decoding
  goes on in the same window (``decode_task.ContinueInWindow``), which saves the extra encoder
  pass (a longer chunk, a long episode's, is decoded as ``transcribe()`` does: nothing held
  back).

A window that fails Whisper's thresholds at temperature 0 is redone alone with the seeded
fallback ladder, and a chunk's segments depend only on its own windows: what else was in the
batch does not change its text, up to floating-point differences between batch shapes
(BENCHMARKS.md measures them).

``transcribe_chunks_batched`` serves the CLI; ``pipeline.asr.microbatch`` lets one task per
chunk (Prefect) share these batches.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from whisper.audio import HOP_LENGTH, N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
from whisper.audio import SAMPLE_RATE as WHISPER_SAMPLE_RATE
from whisper.decoding import (
    DecodingOptions,
    DecodingResult,
)
from whisper.timing import add_word_timestamps
from whisper.tokenizer import get_tokenizer

# Called by this module's name, so scripts/gpu_check.py can swap it (static or dynamic loop).
from pipeline.asr.decode_task import decode_batch
from pipeline.asr.loading import load_model
from pipeline.asr.options import (
    CONDITION_MAX_TEMPERATURE,
    MAX_PROMPT_TOKENS,
    RESUME_SPEECH_AHEAD_S,
    LoadedModel,
    TranscribeOptions,
    context_text,
    continue_limit,
)
from pipeline.asr.whisper import has_context, segments_from_whisper
from pipeline.asr.words import use_numpy_dtw
from pipeline.audio.analysis import sounding_frames, speech_end_s
from pipeline.audio.decode import read_chunk_samples
from pipeline.core.errors import AudioError, TranscriptionError
from pipeline.core.types import Chunk, ChunkTranscript

# Largest automatic batch: beyond it the per-step cost grows with no fewer steps to save.
MAX_AUTO_BATCH = 64
DEFAULT_CPU_BATCH = 8

# --------------------------------------------------------------------------------------------
# Chunks as windows: whisper.transcribe's seek logic, one window at a time


@dataclass
class ChunkState:
    """One chunk in flight: its mel, how far it has been decoded, and what it produced."""

    chunk: Chunk
    mel: torch.Tensor  # (n_mels, content_frames + N_FRAMES), on the model's device
    content_frames: int
    future: Future | None = None
    seek: int = 0
    segments: list[dict[str, Any]] = field(default_factory=list)
    all_tokens: list[int] = field(default_factory=list)
    prompt_reset_since: int = 0
    elapsed_s: float = 0.0  # this chunk's share of the batches it ran in, plus its fallbacks
    windows: int = 0
    # The encoder's output for the window at ``features_seek``, when computed ahead of its batch.
    features: torch.Tensor | None = None
    features_seek: int = -1
    # Seconds into the chunk where its speech ends (quality.speech_end_s), for continuing.
    speech_end_s: float = 0.0
    # Where the chunk itself ends in the mel (frames); after it lies only its trailing context.
    core_end_frames: int | None = None
    # Whether words are timed (word_timestamps, or the WAV holds context: then only the chunk's
    # own words are kept, by their times).
    timed: bool = False
    # Which 10 ms frames of the WAV sound (analysis.sounding_frames), for placing words.
    sounding: np.ndarray | None = None
    # The previous chunk's text as tokens (condition_chunks), before this chunk's own; dropped
    # once a window of this chunk is decoded hotter than CONDITION_MAX_TEMPERATURE.
    context: tuple[int, ...] = ()

    @property
    def done(self) -> bool:
        end = self.content_frames if self.core_end_frames is None else self.core_end_frames
        return self.seek >= end

    def segment_size(self, seek: int | None = None) -> int:
        return min(N_FRAMES, self.content_frames - (self.seek if seek is None else seek))

    def window_mel(self, seek: int | None = None) -> torch.Tensor:
        """The padded log-mel of the window at ``seek`` (default: the next one)."""
        seek = self.seek if seek is None else seek
        return pad_or_trim(self.mel[:, seek : seek + self.segment_size(seek)], N_FRAMES)


class _DecoderOnly:
    """A Whisper model seen by ``whisper.timing`` with the encoder already run: called with
    a window's encoder output (where it expects the mel) and tokens, it runs the decoder only,
    so timing a window's words costs one decoder pass, not a second encoder pass."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.dims = model.dims
        self.decoder = model.decoder
        self.alignment_heads = model.alignment_heads

    @property
    def device(self) -> torch.device:
        return self.model.device  # type: ignore[no-any-return]

    def __call__(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.decoder(tokens, features)  # type: ignore[no-any-return]


class BatchTranscriber:
    """Decodes chunk windows in batches for one model and one set of options."""

    def __init__(self, options: TranscribeOptions, loaded: LoadedModel | None = None) -> None:
        self.options = options
        self.loaded = loaded or load_model(options)
        self.model = self.loaded.model
        fp16 = options.fp16 if options.fp16 is not None else self.loaded.device == "cuda"
        self.fp16 = bool(fp16) and self.loaded.device == "cuda"
        self.dtype = torch.float16 if self.fp16 else torch.float32
        self.language = options.language or ("en" if not self.model.is_multilingual else None)
        if self.language is None:
            raise TranscriptionError(
                "batched decoding needs a language (language detection runs per chunk): "
                "set language, or use batch_size=1"
            )
        self.tokenizer = get_tokenizer(
            self.model.is_multilingual,
            num_languages=self.model.num_languages,
            language=self.language,
            task="transcribe",
        )
        # Given before every window of a chunk (the initial prompt), as faster-whisper
        # does; text from earlier windows follows it only with condition_on_previous_text.
        prompt = options.prompt()
        self.prompt_tokens = tuple(self.tokenizer.encode(" " + prompt) if prompt else [])
        self.input_stride = N_FRAMES // self.model.dims.n_audio_ctx  # mel frames per token: 2
        self.time_precision = self.input_stride * HOP_LENGTH / WHISPER_SAMPLE_RATE  # 0.02 s
        self.batch_size = resolve_batch_size(options.batch_size, self.loaded)
        use_numpy_dtw()  # before any word is timed: numba would compile its DTW (seconds)
        self.result_options = options.to_dict() | {
            "resolved_device": self.loaded.device,
            "batch_size": self.batch_size,
            "engine": "batched",  # which decoder made the text (transcribe.py picks it)
        }

    # -- chunks in and out ---------------------------------------------------------------

    def start(self, chunk: Chunk, future: Future | None = None, context: str = "") -> ChunkState:
        """Read a chunk's samples and compute its padded log-mel (on the model's device);
        ``context``: the previous chunk's text (``options.context_text``), its prompt."""
        try:
            samples = read_chunk_samples(chunk, context=True)
        except (OSError, AudioError) as exc:
            raise TranscriptionError(
                f"cannot read chunk {chunk.number} ({chunk.path}): {exc}"
            ) from exc
        device = self.loaded.device
        # As whisper.transcribe: 30 s of zeros after the audio, so every window slices cleanly.
        mel = log_mel_spectrogram(
            torch.from_numpy(samples), self.model.dims.n_mels, padding=N_SAMPLES, device=device
        )
        state = ChunkState(chunk, mel, content_frames=mel.shape[-1] - N_FRAMES, future=future)
        if context.strip():
            state.context = tuple(self.tokenizer.encode(" " + context.strip()))
        # The chunk's own samples end here; the trailing context is heard, never decoded alone.
        core_n = chunk.own_span[1]
        state.timed = self.options.word_timestamps or has_context(chunk)
        if state.timed:
            state.sounding = sounding_frames(samples, chunk.own_span)
        if has_context(chunk):
            state.core_end_frames = min(state.content_frames, math.ceil(core_n / HOP_LENGTH))
        if self.options.continue_in_window:
            state.speech_end_s = speech_end_s(samples[:core_n])
        return state

    def finish(self, state: ChunkState) -> ChunkTranscript:
        """The chunk's segments in episode time, as ``transcribe_chunk`` returns them."""
        return ChunkTranscript(
            chunk_index=state.chunk.index,
            chunk_sha256=state.chunk.sha256,
            start_s=state.chunk.start_s,
            end_s=state.chunk.end_s,
            segments=segments_from_whisper(
                state.segments,
                state.chunk,
                context=has_context(state.chunk),
                sounding=state.sounding,
                keep_words=self.options.word_timestamps,
            ),
            model=self.loaded.info,
            options=self.result_options,
            elapsed_s=round(state.elapsed_s, 4),
        )

    # -- decoding ------------------------------------------------------------------------

    def prompt_of(self, state: ChunkState) -> tuple[int, ...]:
        """The prompt tokens of a chunk's next window: the initial prompt, the previous
        chunk's text, this chunk's earlier windows (condition_on_previous_text); the last
        MAX_PROMPT_TOKENS of them, as whisper's DecodingTask keeps."""
        tokens = (
            self.prompt_tokens + state.context + tuple(state.all_tokens[state.prompt_reset_since :])
        )
        return tokens[-MAX_PROMPT_TOKENS:]

    def continue_before(self, states: Sequence[ChunkState]) -> list[int] | None:
        """Per state, the timestamp index (in its next window) before which a "continue from
        here" pair may not end the window (``transcribe.continue_limit``)."""
        if not self.options.continue_in_window:
            return None
        frame_s = HOP_LENGTH / WHISPER_SAMPLE_RATE
        return [
            continue_limit(
                s.speech_end_s,
                s.seek * frame_s,
                s.segment_size() * frame_s,
                chunk_s=s.content_frames * frame_s,
            )
            for s in states
        ]

    def _decoding_options(self, temperature: float, prompt: tuple[int, ...]) -> DecodingOptions:
        beam = self.options.beam_size if temperature == 0 else None
        return DecodingOptions(
            task="transcribe",
            language=self.language,
            temperature=temperature,
            beam_size=beam,
            prompt=list(prompt) or None,
            fp16=self.fp16,
        )

    def _needs_fallback(self, result: DecodingResult) -> bool:
        o = self.options
        failed = (
            o.compression_ratio_threshold is not None
            and result.compression_ratio > o.compression_ratio_threshold
        ) or (o.logprob_threshold is not None and result.avg_logprob < o.logprob_threshold)
        silent = (
            o.no_speech_threshold is not None
            and result.no_speech_prob > o.no_speech_threshold
            and o.logprob_threshold is not None
            and result.avg_logprob < o.logprob_threshold
        )
        return failed and not silent

    def _decode_with_fallback(
        self, state: ChunkState, temperatures: Sequence[float]
    ) -> DecodingResult:
        # Whisper's fallback ladder for one window, alone and seeded, so that the sampled
        # decodes depend only on this window (never on batch mates or on chunk order).
        torch.manual_seed(self.options.seed)
        mel = state.window_mel()[None].to(self.dtype)
        prompt = self.prompt_of(state)
        result = None
        limits = self.continue_before([state])
        for t in temperatures:
            result = decode_batch(
                self.model, mel, self._decoding_options(t, prompt), continue_before=limits
            )[0]
            if not self._needs_fallback(result):
                break
        assert result is not None
        return result

    def run_batch(self, states: Sequence[ChunkState]) -> None:
        """Decode the next window of each state (each with its own prompt) and advance them."""
        started = time.perf_counter()
        prompts = [self.prompt_of(s) for s in states]
        first_t = self.options.temperatures[0]
        if first_t == 0:
            features = self.window_features(states)  # whisper skips its encoder for these
            results = decode_batch(
                self.model,
                features,
                self._decoding_options(0.0, prompts[0]),
                continue_before=self.continue_before(states),
                prompts=prompts,
            )
        else:  # sampling from the first try: every window alone, seeded
            results = [self._decode_with_fallback(s, self.options.temperatures) for s in states]
        share = (time.perf_counter() - started) / len(states)
        hotter = self.options.temperatures[1:]
        for k, (state, result) in enumerate(zip(states, results, strict=True)):
            t0 = time.perf_counter()
            window_features = features[k] if first_t == 0 else None
            if first_t == 0 and hotter and self._needs_fallback(result):
                # The temperature-0 try is the batched one (batch-invariant); the rest alone.
                result = self._decode_with_fallback(state, hotter)
            self._advance(state, result, window_features)
            state.elapsed_s += share + (time.perf_counter() - t0)
            state.windows += 1

    def encode_ahead(self, state: ChunkState) -> None:
        """Run the encoder on a state's next window now, before its batch is complete.

        On a CPU the encoder is compute-bound (one window alone costs what it costs in a
        batch), so a micro-batcher waiting for the rest of a batch encodes what has come.
        """
        started = time.perf_counter()
        self._encode([state])
        state.elapsed_s += time.perf_counter() - started

    def window_features(self, states: Sequence[ChunkState]) -> torch.Tensor:
        """The encoder output of each state's next window, (n, n_audio_ctx, n_audio_state):
        the ones encoded ahead, the rest in one batched encoder pass."""
        missing = [s for s in states if s.features is None or s.features_seek != s.seek]
        if missing:
            self._encode(missing)
        stacked = torch.stack([s.features for s in states])  # type: ignore[misc]
        for state in states:
            state.features = None  # used once: the next window is another one
        return stacked

    def _encode(self, states: Sequence[ChunkState]) -> None:
        """One encoder pass over the states' next windows; each keeps its features."""
        mels = torch.stack([s.window_mel() for s in states]).to(self.dtype)
        with torch.inference_mode():
            encoded = self.model.encoder(mels)
        for state, features in zip(states, encoded, strict=True):
            state.features, state.features_seek = features, state.seek

    def _advance(
        self, state: ChunkState, result: DecodingResult, features: torch.Tensor | None = None
    ) -> None:
        # whisper.transcribe's loop body, for one window (``features``: its encoder output,
        # when at hand, for timing its words).
        o = self.options
        segment_size = state.segment_size()
        seek = state.seek
        if o.no_speech_threshold is not None:
            should_skip = result.no_speech_prob > o.no_speech_threshold
            if o.logprob_threshold is not None and result.avg_logprob > o.logprob_threshold:
                should_skip = False  # confident text despite the no-speech probability
            if should_skip:
                state.seek += segment_size
                return
        new = self._segments(state, result, segment_size)
        for seg in new:  # an instantaneous or empty segment is kept but cleared
            if seg["start"] == seg["end"] or not seg["text"].strip():
                seg["text"], seg["tokens"] = "", []
        if state.timed:
            self._time_words(state, new, seek, segment_size, features)
        if state.seek == seek + segment_size:
            self._resume(state, new, seek, segment_size)
        state.segments.extend(new)
        state.all_tokens.extend(t for seg in new for t in seg["tokens"])
        if not o.condition_on_previous_text or result.temperature > CONDITION_MAX_TEMPERATURE:
            state.prompt_reset_since = len(state.all_tokens)
        if result.temperature > CONDITION_MAX_TEMPERATURE:
            state.context = ()

    def _resume(
        self, state: ChunkState, segments: list[dict[str, Any]], seek: int, segment_size: int
    ) -> None:
        """After a window that Whisper ended itself, the rest of the chunk gets a window of its
        own when the chunk's speech goes on RESUME_SPEECH_AHEAD_S or more after the window's
        last word (its timed end, else its segment's): Whisper ends a window early after a
        short reply in a conversation ("Bye." ... "Hello, this is ..."), sometimes with
        timestamps stretched to the window's end, and the speech after it would be lost."""
        if not self.options.continue_in_window:
            return
        spoken = [seg for seg in segments if seg["tokens"]]
        if not spoken:
            return
        words = spoken[-1].get("words")
        last_s = words[-1]["end"] if words else spoken[-1]["end"]
        if state.speech_end_s - last_s < RESUME_SPEECH_AHEAD_S:
            return
        resume = round(last_s * WHISPER_SAMPLE_RATE / HOP_LENGTH)
        if seek < resume < seek + segment_size:
            state.seek = resume

    def _time_words(
        self,
        state: ChunkState,
        segments: list[dict[str, Any]],
        seek: int,
        segment_size: int,
        features: torch.Tensor | None,
    ) -> None:
        """Give a window's segments their words' times (whisper's cross-attention alignment,
        as ``transcribe(word_timestamps=True)``), from the window's encoder output: the
        decoder runs once more over the window's text, for this window alone."""
        if not any(seg["tokens"] for seg in segments):
            return
        if features is None:  # a fallback decode: its encoder output was not kept
            # The window at ``seek``: the state's own seek has moved past it already.
            with torch.inference_mode():
                features = self.model.encoder(state.window_mel(seek)[None].to(self.dtype))[0]
        for seg in segments:
            seg["seek"] = seek
        previous = [s for s in state.segments if s.get("words")]
        last_speech = previous[-1]["end"] if previous else seek * HOP_LENGTH / WHISPER_SAMPLE_RATE
        with torch.inference_mode():
            add_word_timestamps(
                segments=segments,
                model=_DecoderOnly(self.model),
                tokenizer=self.tokenizer,
                mel=features,  # _DecoderOnly takes the encoder output in place of the mel
                num_frames=segment_size,
                last_speech_timestamp=last_speech,
            )

    def _segments(
        self, state: ChunkState, result: DecodingResult, segment_size: int
    ) -> list[dict[str, Any]]:
        """Split a window's tokens into segments and move the chunk's seek, as transcribe does."""
        tokens = list(result.tokens)
        tb = self.tokenizer.timestamp_begin
        time_offset = state.seek * HOP_LENGTH / WHISPER_SAMPLE_RATE
        is_ts = [t >= tb for t in tokens]
        single_timestamp_ending = is_ts[-2:] == [False, True]
        consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
        segments = []
        if consecutive:
            slices = consecutive + ([len(tokens)] if single_timestamp_ending else [])
            last = 0
            for current in slices:
                part = tokens[last:current]
                segments.append(
                    self._segment(
                        time_offset + (part[0] - tb) * self.time_precision,
                        time_offset + (part[-1] - tb) * self.time_precision,
                        part,
                        result,
                    )
                )
                last = current
            if single_timestamp_ending:
                state.seek += segment_size  # no speech after the last timestamp
            else:
                # Whisper stopped early: the rest of the chunk is decoded in a later window.
                state.seek += (tokens[last - 1] - tb) * self.input_stride
        else:
            duration = segment_size * HOP_LENGTH / WHISPER_SAMPLE_RATE
            timestamps = [t for t in tokens if t >= tb]
            if timestamps and timestamps[-1] != tb:
                duration = (timestamps[-1] - tb) * self.time_precision
            segments.append(self._segment(time_offset, time_offset + duration, tokens, result))
            state.seek += segment_size
        return segments

    def _segment(
        self, start: float, end: float, tokens: list[int], result: DecodingResult
    ) -> dict[str, Any]:
        return {
            "start": start,
            "end": end,
            "text": self.tokenizer.decode([t for t in tokens if t < self.tokenizer.eot]),
            "tokens": tokens,
            "temperature": result.temperature,
            "avg_logprob": result.avg_logprob,
            "compression_ratio": result.compression_ratio,
            "no_speech_prob": result.no_speech_prob,
        }

    def next_batch(self, pending: deque[ChunkState]) -> list[ChunkState]:
        """Take up to batch_size states that share the first one's prompt, in queue order
        (any prompts with condition_chunks: rows then have their own,
        decode_task.RaggedInference)."""
        if not pending:
            return []
        prompt = self.prompt_of(pending[0])
        ragged = self.options.condition_chunks > 0 and self.options.temperatures[0] == 0
        batch: list[ChunkState] = []
        rest: deque[ChunkState] = deque()
        while pending:
            state = pending.popleft()
            if len(batch) < self.batch_size and (ragged or self.prompt_of(state) == prompt):
                batch.append(state)
            else:
                rest.append(state)
        pending.extend(rest)
        return batch


# --------------------------------------------------------------------------------------------
# Batch size


def resolve_batch_size(batch_size: int, loaded: LoadedModel) -> int:
    """``batch_size``, or (0: automatic) a size that fits the device's free memory."""
    if batch_size > 0:
        return batch_size
    if loaded.device != "cuda":
        return DEFAULT_CPU_BATCH
    free, _total = torch.cuda.mem_get_info()
    return auto_batch_size(free, loaded.model.dims, fp16=True)


def auto_batch_size(free_bytes: int, dims: Any, fp16: bool = True) -> int:
    """How many 30 s windows fit in ``free_bytes``: a generous per-window estimate, half the
    free memory, at most MAX_AUTO_BATCH."""
    width = 2 if fp16 else 4
    ctx, state = dims.n_audio_ctx, dims.n_audio_state
    # Encoder activations (the MLP's 4x expansion and the attention inputs, a few at a time),
    # the decoder's cross-attention cache (keys and values per layer) and the logits.
    encoder = ctx * state * width * 12
    cache = 2 * dims.n_text_layer * ctx * dims.n_text_state * width
    logits = dims.n_vocab * 4 * 4
    per_window = encoder + cache + logits
    return max(1, min(MAX_AUTO_BATCH, int(free_bytes * 0.5 // per_window)))


# --------------------------------------------------------------------------------------------
# Entry points


def transcribe_chunks_batched(
    chunks: Sequence[Chunk],
    options: TranscribeOptions,
    batch_size: int | None = None,
    on_done: Callable[[ChunkTranscript], None] | None = None,
    loaded: LoadedModel | None = None,
    known: Mapping[int, ChunkTranscript] | None = None,
) -> list[ChunkTranscript]:
    """Transcribe chunks in batches; results in chunk order, ``on_done`` as each chunk ends.

    With ``options.condition_chunks`` a chunk whose predecessor (``options.conditions``) is
    among ``chunks``, or in ``known`` (by chunk index: already transcribed, say by an earlier
    run), is decoded after it with its text as the prompt: round by round, chunk t of every
    run of consecutive chunks in one batch.
    """
    if batch_size is not None and batch_size != options.batch_size:
        options = _with_batch_size(options, batch_size)
    engine = BatchTranscriber(options, loaded)
    results: dict[int, ChunkTranscript] = {}
    known = known or {}
    for round_ in condition_rounds(chunks, options, known):
        contexts = {}
        for pos, before in round_:
            prior = known.get(chunks[pos].index - 1) if before is None else results.get(before)
            contexts[pos] = context_text(prior.segments) if prior is not None else ""
        _decode_states(engine, chunks, contexts, results, on_done)
    return [results[i] for i in range(len(chunks))]


def condition_rounds(
    chunks: Sequence[Chunk],
    options: TranscribeOptions,
    known: Mapping[int, ChunkTranscript] | None = None,
) -> list[list[tuple[int, int | None]]]:
    """The order chunks are decoded in: rounds of (position, position of the chunk it is
    conditioned on; None: on ``known``'s; -1: on none). Without ``condition_chunks``, one
    round of every chunk, unconditioned."""
    known = known or {}
    depth: list[int] = []
    rounds: list[list[tuple[int, int | None]]] = []
    for pos, chunk in enumerate(chunks):
        before: int | None = -1
        if pos > 0 and options.conditions(chunks[pos - 1].index, chunk.index):
            before = pos - 1
        elif chunk.index - 1 in known and options.conditions(chunk.index - 1, chunk.index):
            before = None
        d = depth[before] + 1 if before is not None and before >= 0 else 0
        depth.append(d)
        if d == len(rounds):
            rounds.append([])
        rounds[d].append((pos, before))
    return rounds


def _decode_states(
    engine: BatchTranscriber,
    chunks: Sequence[Chunk],
    contexts: dict[int, str],
    results: dict[int, ChunkTranscript],
    on_done: Callable[[ChunkTranscript], None] | None,
) -> None:
    # The chunks at ``contexts``' positions, each with its prompt text, batched.
    todo = deque(contexts.items())
    pending: deque[ChunkState] = deque()  # remainders first: they finish their chunks
    order: dict[int, int] = {}
    while todo or pending:
        while todo and len(pending) < engine.batch_size:
            pos, context = todo.popleft()
            state = engine.start(chunks[pos], context=context)
            order[id(state)] = pos
            pending.append(state)
        batch = engine.next_batch(pending)
        engine.run_batch(batch)
        unfinished = []
        for state in batch:
            if state.done:
                result = engine.finish(state)
                results[order.pop(id(state))] = result
                if on_done is not None:
                    on_done(result)
            else:
                unfinished.append(state)
        pending.extendleft(reversed(unfinished))


def _with_batch_size(options: TranscribeOptions, batch_size: int) -> TranscribeOptions:

    return dataclasses.replace(options, batch_size=batch_size)
