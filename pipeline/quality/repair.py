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
    assess_chunk,
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


def repair_chunks(
    manifest: ChunkManifest,
    transcripts: Sequence[ChunkTranscript],
    options: TranscribeOptions,
    loaded: LoadedModel | None = None,
    policy: RepairPolicy | None = None,
    thresholds: QualityThresholds | None = None,
    on_retry: Callable[[Chunk, ChunkFlags], None] | None = None,
) -> tuple[list[ChunkTranscript], QualityReport]:
    """Assess every chunk, retry the flagged ones once, and return the kept transcripts.

    ``options`` are the TranscribeOptions of the first pass and ``loaded`` its LoadedModel
    (loaded here when None). The report's signals and flags describe the kept results; its
    ``repairs`` say what was retried, with the signals before and after.
    """
    from pipeline.asr.loading import load_model
    from pipeline.asr.transcribe import transcribe_chunk  # torch only when retrying

    policy = policy or RepairPolicy()
    t = thresholds or QualityThresholds()
    chunks = {c.index: c for c in manifest.chunks}
    kept: list[ChunkTranscript] = []
    signals: list[ChunkSignals] = []
    flags: list[ChunkFlags] = []
    repairs: list[Repair] = []
    for ct in sorted(transcripts, key=lambda c: c.chunk_index):
        chunk = chunks[ct.chunk_index]
        sig, flag = assess_chunk(chunk, ct, t)
        wanted = policy.enabled and any(getattr(flag, name) for name in policy.flags)
        if wanted:
            if on_retry is not None:
                on_retry(chunk, flag)
            retry_options = policy.retry_options(options, flag)
            loaded = loaded or load_model(options)
            retry = transcribe_chunk(chunk, retry_options, loaded)
            retry_sig, retry_flag = assess_chunk(chunk, retry, t)
            better = badness(retry_sig, retry_flag) < badness(sig, flag)
            repairs.append(
                Repair(
                    chunk_index=ct.chunk_index,
                    flags_before=flag.names,
                    flags_after=(retry_flag if better else flag).names,
                    before=sig,
                    after=retry_sig,
                    kept="retry" if better else "original",
                    policy=retry_options.to_dict(),
                    reasons_before=flag.reasons,
                    reasons_after=retry_flag.reasons,
                )
            )
            if better:
                ct, sig, flag = retry, retry_sig, retry_flag
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
