"""Repair flagged chunks: transcribe each once more with a fallback policy, keep the better one.

The first pass is deterministic and cheap (greedy, no prompt, no conditioning). A chunk the
reference-free flags call suspect gets one retry that trades speed for robustness:

- beam search (5 beams) at temperature 0 with Whisper's temperature ladder behind it: beams
  escape the single-path loops greedy decoding falls into, and the ladder re-samples a window
  that still looks like a failure (too repetitive or improbable);
- no initial prompt and no conditioning on earlier text: both can seed the same hallucination
  again;
- for dropped speech only, Whisper's no-speech gate is switched off: it is what skips a window
  whose first token looks like silence, and that is how whole stretches of speech go missing.

"Better" is judged by the same reference-free signals (fewer flags first, then fewer words
over non-speech, fewer seconds of sound without text, higher log-probability); on a tie the
original stays, so a retry can never make a chunk worse by these measures.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.core.errors import OptionsError
from pipeline.core.types import Chunk, ChunkManifest, ChunkTranscript
from pipeline.quality.signals import (
    ChunkFlags,
    ChunkSignals,
    QualityReport,
    QualityThresholds,
    Repair,
    screen_chunk,
)

FLAG_NAMES = ("hallucination", "dropped_speech", "low_confidence")


@dataclass(frozen=True)
class RepairPolicy:
    """Whether and how flagged chunks are transcribed again (once each)."""

    # False: flag only, never re-transcribe.
    enabled: bool = True
    # Flags that trigger a retry.
    flags: tuple[str, ...] = FLAG_NAMES
    # Beam width of the retry (None: greedy).
    beam_size: int | None = 5
    # The retry's temperature ladder (Whisper's own).
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    # Switch Whisper's no-speech gate off when the flag is dropped speech.
    ungate_dropped_speech: bool = True

    def __post_init__(self) -> None:
        unknown = set(self.flags) - set(FLAG_NAMES)
        if unknown:
            raise OptionsError(
                f"unknown repair flags {sorted(unknown)}: choose from {', '.join(FLAG_NAMES)}"
            )
        if self.beam_size is not None and not 1 <= self.beam_size <= 32:
            raise OptionsError(f"repair beam_size must be between 1 and 32, not {self.beam_size}")
        object.__setattr__(self, "flags", tuple(self.flags))
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))

    def retry_options(self, options: TranscribeOptions, flags: ChunkFlags) -> TranscribeOptions:
        """The TranscribeOptions of the retry of a chunk raising ``flags``."""
        changes: dict[str, Any] = {
            "beam_size": self.beam_size,
            "temperatures": self.temperatures,
            "initial_prompt": None,
            "condition_on_previous_text": False,
            "condition_chunks": 0,  # a retry is decoded alone, from its audio only
        }
        if flags.dropped_speech and self.ungate_dropped_speech:
            changes["no_speech_threshold"] = None
        return dataclasses.replace(options, **changes)


def badness(signals: ChunkSignals, flags: ChunkFlags) -> tuple[float, ...]:
    """Sort key of a chunk result by the reference-free signals: smaller is better."""
    logprob = signals.avg_logprob if signals.avg_logprob is not None else -10.0
    return (
        len(flags.names),
        signals.words_over_nonspeech + (signals.top_ngram_count if flags.hallucination else 0),
        signals.uncovered_sound_s,
        -logprob,
    )


@dataclass(frozen=True)
class RepairOutcome:
    """What the retry of one flagged chunk gave: the transcript kept, its signals and flags,
    and the record of the retry (both results' signals, which was kept, the retry policy)."""

    transcript: ChunkTranscript
    signals: ChunkSignals
    flags: ChunkFlags
    repair: Repair


def wants_repair(flags: ChunkFlags, policy: RepairPolicy) -> bool:
    """Whether a chunk raising ``flags`` is transcribed once more under ``policy``."""
    return policy.enabled and any(getattr(flags, name) for name in policy.flags)


def repair_chunk(
    chunk: Chunk,
    transcript: ChunkTranscript,
    signals: ChunkSignals,
    flags: ChunkFlags,
    options: TranscribeOptions,
    policy: RepairPolicy | None = None,
    thresholds: QualityThresholds | None = None,
    loaded: LoadedModel | None = None,
) -> RepairOutcome:
    """Transcribe a flagged chunk once more with the policy's retry options and keep the
    better result by the reference-free signals (the original on a tie)."""
    from pipeline.asr.loading import load_model
    from pipeline.asr.transcribe import transcribe_chunk  # torch only when retrying

    policy = policy or RepairPolicy()
    t = thresholds or QualityThresholds()
    retry_options = policy.retry_options(options, flags)
    retry = transcribe_chunk(chunk, retry_options, loaded or load_model(options))
    retry, retry_sig, retry_flag = screen_chunk(chunk, retry, t)
    better = badness(retry_sig, retry_flag) < badness(signals, flags)
    record = Repair(
        chunk_index=transcript.chunk_index,
        flags_before=flags.names,
        flags_after=(retry_flag if better else flags).names,
        before=signals,
        after=retry_sig,
        kept="retry" if better else "original",
        policy=retry_options.to_dict(),
        reasons_before=flags.reasons,
        reasons_after=retry_flag.reasons,
    )
    if better:
        return RepairOutcome(retry, retry_sig, retry_flag, record)
    return RepairOutcome(transcript, signals, flags, record)


def repair_chunks(
    manifest: ChunkManifest,
    transcripts: Sequence[ChunkTranscript],
    options: TranscribeOptions,
    loaded: LoadedModel | None = None,
    policy: RepairPolicy | None = None,
    thresholds: QualityThresholds | None = None,
    on_retry: Callable[[Chunk, ChunkFlags], None] | None = None,
) -> tuple[list[ChunkTranscript], QualityReport]:
    """Screen every chunk (``screen_chunk``: segments over no speech taken out), retry the
    flagged ones once, and return the kept transcripts.

    ``options`` are the TranscribeOptions of the first pass and ``loaded`` its LoadedModel
    (loaded at the first retry when None). The report's signals and flags describe the kept
    results; its ``repairs`` say what was retried, with the signals before and after.
    """
    policy = policy or RepairPolicy()
    t = thresholds or QualityThresholds()
    chunks = {c.index: c for c in manifest.chunks}
    kept: list[ChunkTranscript] = []
    signals: list[ChunkSignals] = []
    flags: list[ChunkFlags] = []
    repairs: list[Repair] = []
    for ct in sorted(transcripts, key=lambda c: c.chunk_index):
        chunk = chunks[ct.chunk_index]
        ct, sig, flag = screen_chunk(chunk, ct, t)
        if wants_repair(flag, policy):
            if on_retry is not None:
                on_retry(chunk, flag)
            if loaded is None:
                from pipeline.asr.loading import load_model

                loaded = load_model(options)
            outcome = repair_chunk(chunk, ct, sig, flag, options, policy, t, loaded)
            repairs.append(outcome.repair)
            ct, sig, flag = outcome.transcript, outcome.signals, outcome.flags
        kept.append(ct)
        signals.append(sig)
        flags.append(flag)
    report = QualityReport(
        episode_id=manifest.episode_id,
        signals=tuple(signals),
        flags=tuple(flags),
        thresholds=t,
        repairs=tuple(repairs),
    )
    return kept, report
