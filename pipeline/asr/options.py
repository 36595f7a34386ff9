"""How chunks are transcribed: the options recorded with every result, and the facts about a
loaded model that the engines share. Plain values: no torch or whisper at import."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import OptionsError, TranscriptionError
from pipeline.core.types import WHISPER_WINDOW_S, ModelInfo, Segment

DEVICES = ("auto", "cpu", "cuda")
BACKENDS = ("openai-whisper", "faster-whisper")  # faster-whisper: pipeline/asr/ct2.py
# Whisper's own defaults for deciding that a decode failed and a hotter one should be tried.
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
# Transcript styles (pipeline/quality/style.py): verbatim, what the model writes; clean, as
# publishers' transcripts are: fillers ("um", "you know" as a parenthetical) taken out of the
# chunk's text after decoding. Decoding is the same for both.
STYLES = ("verbatim", "clean")
MAX_BATCH_SIZE = 256  # windows per forward pass; more only costs memory
# Most prompt tokens the decoder is given: whisper keeps the last n_text_ctx // 2 - 1 (223).
MAX_PROMPT_TOKENS = 223
# Segments decoded at a temperature above this do not condition what follows (as transcribe()).
CONDITION_MAX_TEMPERATURE = 0.5
MAX_CONDITION_CHUNKS = 100_000


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
    # Optional text (names, jargon) given to the decoder as context for every window.
    initial_prompt: str | None = None
    # "clean" (fillers taken out of the text, as publishers' transcripts are) or "verbatim"
    # (STYLES). Applied to each chunk's text when it is screened (quality.screen_chunk).
    style: str = "clean"
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
    # Time every word (whisper's cross-attention alignment: one more decoder pass per window
    # over its own text; faster-whisper's align). Words are in transcript.json and are what
    # speakers are assigned by. The text does not depend on it, on any engine (on
    # whisper.transcribe's path the words are timed after decoding, window by window).
    word_timestamps: bool = True
    # Chunks conditioned on the previous chunk's text, in runs of this many consecutive chunks
    # (0: off, every chunk starts cold). Chunk j of a run gets chunk j-1's own text (after any
    # segment decoded hotter than 0.5, its last MAX_PROMPT_TOKENS tokens) as the decoder's
    # prompt, as transcribe(condition_on_previous_text=True) does from window to window; the
    # first chunk of a run starts cold. Round t decodes chunk t of every run in one batch, so
    # runs are the parallelism: fixed here, never by hardware, so the text stays the same
    # whatever the batch size.
    condition_chunks: int = 0

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise OptionsError(
                f"backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}"
            )
        if not self.model.strip():
            raise OptionsError("model must not be empty: use a name `podscribe models` lists")
        if self.style not in STYLES:
            raise OptionsError(f"style must be one of {', '.join(STYLES)}, not {self.style!r}")
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
        if not 0 <= self.condition_chunks <= MAX_CONDITION_CHUNKS:
            raise OptionsError(
                f"condition_chunks must be between 0 (off) and {MAX_CONDITION_CHUNKS}, "
                f"not {self.condition_chunks}"
            )
        if self.condition_chunks and (self.backend != "openai-whisper" or self.beam_size):
            raise OptionsError(
                "condition_chunks needs the batched greedy decoder: backend openai-whisper "
                "without beam_size"
            )
        if self.model.endswith(".en") and self.language not in ("en", None):
            raise OptionsError(f"model {self.model} is English-only: language must be 'en'")

    def prompt(self) -> str | None:
        """The text given to the decoder before every window: ``initial_prompt``; None when
        there is none."""
        return (self.initial_prompt or "").strip() or None

    def conditions(self, previous_index: int, index: int) -> bool:
        """Whether chunk ``index`` is conditioned on chunk ``previous_index``'s text: its
        predecessor, in the same run of ``condition_chunks`` chunks."""
        k = self.condition_chunks
        return k > 1 and index == previous_index + 1 and index % k != 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["temperatures"] = list(self.temperatures)
        return d


# How much of a chunk's speech must lie after a "continue from here" timestamp pair for decoding
# to go on in the same window (continue_in_window); a shorter rest gets a window of its own.
CONTINUE_SPEECH_AHEAD_S = 0.5
TIMESTAMP_S = 0.02  # one Whisper timestamp token
# How much of a chunk's speech must lie after the end of a window that Whisper ended itself (EOT
# after a segment's end) for the rest of the chunk to be decoded in a window of its own.
RESUME_SPEECH_AHEAD_S = 1.0


def context_text(previous: Sequence[Segment]) -> str:
    """The text a chunk hands to its successor as the decoder's prompt (``condition_chunks``):
    its segments after the last one decoded hotter than CONDITION_MAX_TEMPERATURE (a sampled
    decode is a failed one; transcribe() stops conditioning on it too)."""
    kept: list[str] = []
    for seg in previous:
        if seg.temperature > CONDITION_MAX_TEMPERATURE:
            kept = []
        elif seg.text.strip():
            kept.append(seg.text.strip())
    return " ".join(kept)


def continue_limit(
    speech_end_s: float, window_start_s: float, window_s: float, chunk_s: float = 0.0
) -> int:
    """The timestamp index, in a window that starts ``window_start_s`` into the chunk and holds
    ``window_s`` of it, before which a timestamp pair may not end that window: the one
    ``CONTINUE_SPEECH_AHEAD_S`` before the chunk's speech ends (``quality.speech_end_s``: music,
    noise and silence do not count); 0 when the window holds no such speech.

    Always 0 in a chunk of more than one window (``chunk_s`` over Whisper's 30 s: a long
    episode's, ``ChunkOptions.long_chunk_s``): it is decoded as ``transcribe()`` decodes, each
    window ending where Whisper ends it and the next starting at that timestamp. Held on in a
    window the chunk's speech runs past, Whisper writes the word the window's end cuts in two
    (longform-dev in 120 s chunks: 145 insertions against 65); held in a long chunk's last
    window only, it garbled a phrase there ("comprehensive and fast" -> "comprehensives in
    fast") and gained nothing (BENCHMARKS.md, "Fifth pass")."""
    if chunk_s > WHISPER_WINDOW_S:
        return 0
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
