"""Reference-free quality signals per chunk, and the flags a reviewer should look at.

Most episodes have no reference, so every chunk is also judged on what needs none:

- from Whisper's segments: average log-probability, no-speech probability, fallback temperature,
  the compression ratio of the chunk's text and its most repeated word 3-gram (loops), words per
  second;
- from the chunk's audio: each 1 s window (0.5 s hop) is called ``silence``, ``noise``,
  ``music`` or ``speech`` (``pipeline.audio.analysis``).

From these, three flags:

- ``hallucination``: words where the audio holds no speech (text over music, tone or silence),
  or a repetition loop (a 3-gram said again and again, or text that zlib squeezes like Whisper's
  own loop test);
- ``dropped_speech``: seconds of sound (speech or music-like: both lie in the speech band) that
  no segment covers; a chunk whose speech became music or that Whisper skipped lands here;
- ``low_confidence``: Whisper's own failure level (average log-probability below -1).

A short jingle before speech does not fire any of them: its seconds are under the
``dropped_sound_s`` floor, and a segment spanning jingle and speech still holds mostly speech.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from pipeline.audio.analysis import SoundThresholds, WindowClasses, classify_windows
from pipeline.audio.decode import read_chunk_samples
from pipeline.core.errors import OptionsError
from pipeline.core.types import WHISPER_WINDOW_S, Chunk, ChunkTranscript, Segment
from pipeline.quality.score import normalize_words
from pipeline.quality.style import apply_style

__all__ = [
    "ChunkFlags",
    "ChunkSignals",
    "QualityReport",
    "QualityThresholds",
    "Repair",
    "assess_chunk",
    "assess_chunks",
    "chunk_signals",
    "flag_chunk",
    "quality_report_from_dict",
    "repeated_ngram",
    "screen_chunk",
    "screen_chunks",
    "text_compression_ratio",
]

NGRAM = 3  # word n-grams counted for loops


@dataclass(frozen=True)
class QualityThresholds:
    """Where a signal becomes a flag; defaults tuned on the dev episode (see module doc)."""

    # Window median spectral similarity at or above which sound counts as music (stationary).
    music_similarity: float = 0.95
    # Window median spectral flatness above which sound counts as noise, not speech.
    noise_flatness: float = 0.3
    # Seconds either side of a segment that still count as covered (Whisper's times are rough).
    coverage_tolerance_s: float = 1.0
    # A segment whose windows hold less speech than this fraction is text over non-speech.
    segment_speech_fraction: float = 0.25
    # Words over non-speech at or above which a chunk is flagged as hallucinating.
    hallucinated_words: int = 2
    # A 3-gram said this many times in one chunk is a loop.
    ngram_repeats: int = 4
    # Whisper's own loop test: text that zlib compresses better than this repeats itself.
    compression_ratio: float = 2.4
    # Seconds of sound without text at or above which speech counts as dropped.
    dropped_sound_s: float = 5.0
    # Whisper's own failure level for the duration-weighted average log-probability.
    avg_logprob: float = -1.0

    def __post_init__(self) -> None:
        for name in ("music_similarity", "noise_flatness", "segment_speech_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise OptionsError(f"{name} must be within [0, 1], not {value}")
        for name in ("coverage_tolerance_s", "dropped_sound_s", "compression_ratio"):
            if getattr(self, name) < 0:
                raise OptionsError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.hallucinated_words < 1 or self.ngram_repeats < 2:
            raise OptionsError("hallucinated_words must be >= 1 and ngram_repeats >= 2")
        if self.avg_logprob > 0:
            raise OptionsError(f"avg_logprob is a log-probability (<= 0), not {self.avg_logprob}")

    def sound(self) -> SoundThresholds:
        """The thresholds that classify audio windows."""
        return SoundThresholds(self.music_similarity, self.noise_flatness)


@dataclass(frozen=True)
class TakenOut:
    """A segment the quality stage took out of the transcript, kept here so that what was
    removed can be read and checked (quality.json, the HTML report)."""

    start_s: float
    end_s: float
    text: str
    reason: str  # NO_SPEECH or TAIL_GUESS


NO_SPEECH = "no speech under it"
TAIL_GUESS = "guess in the chunk's tail"


@dataclass(frozen=True)
class ChunkSignals:
    """Everything measured on one chunk without a reference."""

    chunk_index: int
    start_s: float
    end_s: float
    words: int  # normalised words in the chunk's text
    words_per_s: float  # over the chunk's length (a rate over speech seconds explodes on
    # a chunk with almost no speech, which is exactly where it would be read)
    avg_logprob: float | None  # duration-weighted over segments; None without segments
    no_speech_prob: float | None  # duration-weighted over segments
    max_temperature: float  # hottest fallback Whisper needed (0 = greedy throughout)
    # Of the chunk's text, Whisper's formula; 0 for no text. In a chunk longer than Whisper's
    # 30 s window (a long episode's), the highest over its decoding windows (``text_spans``),
    # like the top 3-gram: a loop is judged on what one window holds, not on two minutes of
    # talk.
    compression_ratio: float
    top_ngram: str  # most repeated word 3-gram ("" when none repeats)
    top_ngram_count: int
    speech_s: float
    music_s: float
    noise_s: float
    silence_s: float
    uncovered_sound_s: float  # speech + music seconds no segment covers
    uncovered_music_s: float  # the music-like part of it
    words_over_nonspeech: int  # words in segments over (mostly) no speech
    # Segments taken out before these signals because no window under them is speech.
    dropped_nonspeech: int = 0
    # Segments taken out as guesses in the chunk's tail (``tail_guess``).
    dropped_guesses: int = 0
    # Filler words taken out for the clean style (quality.style).
    fillers_removed: int = 0
    # The segments counted in dropped_nonspeech and dropped_guesses, with their text.
    taken_out: tuple[TakenOut, ...] = ()

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class ChunkFlags:
    """The flags raised on one chunk, each with the reason in words."""

    chunk_index: int
    hallucination: bool = False
    dropped_speech: bool = False
    low_confidence: bool = False
    reasons: tuple[str, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        """The raised flags' names, in a fixed order."""
        return tuple(
            n for n in ("hallucination", "dropped_speech", "low_confidence") if getattr(self, n)
        )

    @property
    def any(self) -> bool:
        return bool(self.names)


@dataclass(frozen=True)
class Repair:
    """One flagged chunk transcribed again, and which result was kept."""

    chunk_index: int
    flags_before: tuple[str, ...]
    flags_after: tuple[str, ...]  # flags of the result that was kept
    before: ChunkSignals
    after: ChunkSignals  # signals of the retry (kept or not)
    kept: str  # "retry" or "original"
    policy: dict[str, Any]  # the options the retry ran with
    reasons_before: tuple[str, ...] = ()
    reasons_after: tuple[str, ...] = ()


@dataclass(frozen=True)
class QualityReport:
    """Signals and flags of every chunk of an episode, and what was repaired."""

    episode_id: str
    signals: tuple[ChunkSignals, ...]
    flags: tuple[ChunkFlags, ...]
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    repairs: tuple[Repair, ...] = ()

    def flagged(self) -> tuple[ChunkFlags, ...]:
        """The chunks with at least one flag."""
        return tuple(f for f in self.flags if f.any)


# --- text --------------------------------------------------------------------------------------


def text_compression_ratio(text: str) -> float:
    """Whisper's loop test: UTF-8 length over zlib-compressed length (0 for empty text)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def repeated_ngram(words: Sequence[str], n: int = NGRAM) -> tuple[str, int]:
    """The most frequent word n-gram and its count; ("", 0) when no n-gram occurs twice."""
    grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return "", 0
    gram, count = max(grams.items(), key=lambda kv: (kv[1], -len(" ".join(kv[0]))))
    return (" ".join(gram), count) if count > 1 else ("", 0)


def text_spans(
    segments: Sequence[Segment], seg_words: Sequence[Sequence[str]], duration_s: float
) -> list[tuple[str, list[str]]]:
    """The chunk's text and words per Whisper window: a chunk of at most 30 s is one span; a
    longer one (a long episode's) has one per decoding window, where a loop lives (the
    decoder repeating itself) and which the thresholds were set on. The segments of one
    window are the consecutive ones that share its avg_logprob, no_speech_prob and
    temperature: every engine reports those per window, not per segment."""
    texts = [seg.text.strip() for seg in segments]
    if duration_s <= WHISPER_WINDOW_S:  # one window: the whole chunk
        return [(" ".join(texts), [w for ws in seg_words for w in ws])]
    groups: list[tuple[list[str], list[str]]] = []
    last: tuple[float, float, float] | None = None
    for seg, text, words in zip(segments, texts, seg_words, strict=True):
        window = (seg.avg_logprob, seg.no_speech_prob, seg.temperature)
        if window != last:
            groups.append(([], []))
            last = window
        groups[-1][0].append(text)
        groups[-1][1].extend(words)
    return [(" ".join(t), w) for t, w in groups]


def _loop_signals(spans: Sequence[tuple[str, list[str]]]) -> tuple[float, str, int]:
    """The highest compression ratio and the most repeated 3-gram over a chunk's spans."""
    ratio, gram, count = 0.0, "", 0
    for text, words in spans:
        ratio = max(ratio, text_compression_ratio(text))
        g, c = repeated_ngram(words)
        if c > count:
            gram, count = g, c
    return ratio, gram, count


def _weighted(segments: Sequence[Segment], attr: str) -> float | None:
    if not segments:
        return None
    weights = [max(s.end - s.start, 0.01) for s in segments]
    return sum(getattr(s, attr) * w for s, w in zip(segments, weights, strict=True)) / sum(weights)


# --- signals and flags ------------------------------------------------------------------------


def _covered(time: float, spans: Sequence[tuple[float, float]], tolerance: float) -> bool:
    return any(a - tolerance <= time <= b + tolerance for a, b in spans)


def _segment_words_over_nonspeech(
    seg: Segment, n_words: int, windows: WindowClasses, t: QualityThresholds
) -> int:
    inside = [c for k, c in enumerate(windows.classes) if seg.start <= windows.center(k) <= seg.end]
    if not inside:  # a segment shorter than a hop: judge it by the nearest window
        mid = (seg.start + seg.end) / 2
        nearest = min(
            range(len(windows.classes)), key=lambda k: abs(windows.center(k) - mid), default=None
        )
        inside = [] if nearest is None else [windows.classes[nearest]]
    if not inside:
        return 0
    speech = inside.count("speech") / len(inside)
    return n_words if speech < t.segment_speech_fraction else 0


def chunk_signals(
    transcript: ChunkTranscript,
    windows: WindowClasses,
    thresholds: QualityThresholds | None = None,
) -> ChunkSignals:
    """Signals of one chunk from its transcript and its classified audio windows."""
    t = thresholds or QualityThresholds()
    segments = [s for s in transcript.segments if s.text.strip()]
    seg_words = [normalize_words(s.text) for s in segments]
    words = [w for ws in seg_words for w in ws]
    spans = [(s.start, s.end) for s, ws in zip(segments, seg_words, strict=True) if ws]
    uncovered = [
        c
        for k, c in enumerate(windows.classes)
        if c in ("speech", "music")
        and not _covered(windows.center(k), spans, t.coverage_tolerance_s)
    ]
    over_nonspeech = sum(
        _segment_words_over_nonspeech(s, len(ws), windows, t)
        for s, ws in zip(segments, seg_words, strict=True)
        if ws
    )
    speech_s = windows.seconds("speech")
    duration = transcript.end_s - transcript.start_s
    ratio, gram, count = _loop_signals(text_spans(segments, seg_words, duration))
    return ChunkSignals(
        chunk_index=transcript.chunk_index,
        start_s=transcript.start_s,
        end_s=transcript.end_s,
        words=len(words),
        words_per_s=round(len(words) / duration, 3) if duration > 0 else 0.0,
        avg_logprob=_round(_weighted(segments, "avg_logprob")),
        no_speech_prob=_round(_weighted(segments, "no_speech_prob")),
        max_temperature=max((s.temperature for s in segments), default=0.0),
        compression_ratio=round(ratio, 3),
        top_ngram=gram,
        top_ngram_count=count,
        speech_s=speech_s,
        music_s=windows.seconds("music"),
        noise_s=windows.seconds("noise"),
        silence_s=windows.seconds("silence"),
        uncovered_sound_s=len(uncovered) * windows.hop_s,
        uncovered_music_s=uncovered.count("music") * windows.hop_s,
        words_over_nonspeech=over_nonspeech,
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def flag_chunk(signals: ChunkSignals, thresholds: QualityThresholds | None = None) -> ChunkFlags:
    """The flags a chunk's signals raise, with a reason for each."""
    t = thresholds or QualityThresholds()
    s = signals
    reasons: list[str] = []
    hallucination = dropped = low = False
    if s.words_over_nonspeech >= t.hallucinated_words:
        hallucination = True
        reasons.append(
            f"hallucination: {s.words_over_nonspeech} words where the audio holds no speech "
            f"({s.music_s:.1f} s music-like, {s.silence_s:.1f} s silent)"
        )
    if s.top_ngram_count >= t.ngram_repeats:
        hallucination = True
        reasons.append(f"hallucination: loop, '{s.top_ngram}' said {s.top_ngram_count} times")
    if s.compression_ratio > t.compression_ratio:
        hallucination = True
        reasons.append(f"hallucination: text repeats itself (compression {s.compression_ratio})")
    if s.uncovered_sound_s >= t.dropped_sound_s:
        dropped = True
        reasons.append(
            f"dropped_speech: {s.uncovered_sound_s:.1f} s of sound without text "
            f"({s.uncovered_music_s:.1f} s of it music-like)"
        )
    if s.avg_logprob is not None and s.avg_logprob < t.avg_logprob:
        low = True
        reasons.append(f"low_confidence: average log-probability {s.avg_logprob:.2f}")
    return ChunkFlags(s.chunk_index, hallucination, dropped, low, tuple(reasons))


def assess_chunk(
    chunk: Chunk, transcript: ChunkTranscript, thresholds: QualityThresholds | None = None
) -> tuple[ChunkSignals, ChunkFlags]:
    """Signals and flags of one chunk, reading its WAV."""
    t = thresholds or QualityThresholds()
    windows = classify_windows(read_chunk_samples(chunk), chunk.start_s, t.sound())
    signals = chunk_signals(transcript, windows, t)
    return signals, flag_chunk(signals, t)


def screen_chunk(
    chunk: Chunk, transcript: ChunkTranscript, thresholds: QualityThresholds | None = None
) -> tuple[ChunkTranscript, ChunkSignals, ChunkFlags]:
    """Take out the segments that lie over no speech at all (silence, noise or music under
    every window they touch: text the model wrote over a quiet tail or a jingle, never
    something said) and the guesses in the chunk's tail (``tail_guess``), put the rest in
    the chunk's style (``quality.style``: fillers out for clean), then the signals and flags
    of what is left, reading the WAV once."""
    t = thresholds or QualityThresholds()
    windows = classify_windows(read_chunk_samples(chunk), chunk.start_s, t.sound())
    segments = transcript.segments
    heard = tuple(s for s in segments if not s.text.strip() or windows.speech_over(s.start, s.end))
    kept = tuple(s for s in heard if not tail_guess(s, transcript.end_s))
    if len(kept) != len(segments):
        transcript = dataclasses.replace(transcript, segments=kept)
    transcript, fillers = apply_style(transcript)
    heard_ids, kept_ids = {id(s) for s in heard}, {id(s) for s in kept}
    taken_out = tuple(
        TakenOut(
            seg.start, seg.end, seg.text.strip(), TAIL_GUESS if id(seg) in heard_ids else NO_SPEECH
        )
        for seg in segments
        if id(seg) not in kept_ids
    )
    signals = dataclasses.replace(
        chunk_signals(transcript, windows, t),
        dropped_nonspeech=len(segments) - len(heard),
        dropped_guesses=len(heard) - len(kept),
        fillers_removed=fillers,
        taken_out=taken_out,
    )
    return transcript, signals, flag_chunk(signals, t)


# A chunk's last words that the model itself did not believe: a segment ending within
# TAIL_GUESS_S of the chunk's end whose words average under TAIL_GUESS_PROBABILITY and come
# faster than anyone speaks (TAIL_GUESS_WORDS_PER_S: the words are squeezed into the last
# moments of the audio). On longform-dev: "Good evening." (0.28, 0.31 in 0.19 s) and
# "ceremony." (0.0 in 0.02 s) over a clip's quiet, clipped end, where screen_chunk's sound
# analysis hears speech; with other padding of the window, "We have, we have a lot of time."
# (8 words in 0.66 s). No segment of dev, seed or conversation-dev is one (the nearest,
# "check." at 0.32 and "You too." at 0.39/0.67, are said at 2.8 and 3.8 words a second).
TAIL_GUESS_S = 1.0
TAIL_GUESS_PROBABILITY = 0.5
TAIL_GUESS_WORDS_PER_S = 6.0


def tail_guess(segment: Segment, chunk_end_s: float) -> bool:
    """Whether a segment is a guess over the chunk's tail (see TAIL_GUESS_S): only with
    timed words, whose probabilities say how sure the model was of each."""
    words = [w for w in segment.words or () if w.text.strip()]
    if not words or chunk_end_s - segment.end > TAIL_GUESS_S:
        return False
    doubt = sum(w.probability for w in words) / len(words) < TAIL_GUESS_PROBABILITY
    rate = len(words) / max(segment.end - segment.start, 0.01)
    return doubt and rate > TAIL_GUESS_WORDS_PER_S


def screen_chunks(
    episode_id: str,
    chunks: Sequence[Chunk],
    transcripts: Sequence[ChunkTranscript],
    thresholds: QualityThresholds | None = None,
) -> tuple[list[ChunkTranscript], QualityReport]:
    """``screen_chunk`` for every chunk (matched to its transcript by index): the screened
    transcripts in chunk order and the quality report on them."""
    t = thresholds or QualityThresholds()
    by_index = {c.index: c for c in chunks}
    screened = [
        screen_chunk(by_index[ct.chunk_index], ct, t)
        for ct in sorted(transcripts, key=lambda c: c.chunk_index)
    ]
    report = QualityReport(
        episode_id=episode_id,
        signals=tuple(s for _, s, _ in screened),
        flags=tuple(f for _, _, f in screened),
        thresholds=t,
    )
    return [ct for ct, _, _ in screened], report


def assess_chunks(
    episode_id: str,
    chunks: Sequence[Chunk],
    transcripts: Sequence[ChunkTranscript],
    thresholds: QualityThresholds | None = None,
    repairs: Sequence[Repair] = (),
) -> QualityReport:
    """Signals and flags of every chunk (matched to its transcript by index)."""
    t = thresholds or QualityThresholds()
    by_index = {c.index: c for c in chunks}
    assessed = [
        assess_chunk(by_index[ct.chunk_index], ct, t)
        for ct in sorted(transcripts, key=lambda c: c.chunk_index)
    ]
    return QualityReport(
        episode_id=episode_id,
        signals=tuple(s for s, _ in assessed),
        flags=tuple(f for _, f in assessed),
        thresholds=t,
        repairs=tuple(repairs),
    )


# --- JSON --------------------------------------------------------------------------------------


def _build(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in fields(cls)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
    return cls(**kwargs)


def _signals(data: dict[str, Any]) -> ChunkSignals:
    taken_out = tuple(_build(TakenOut, x) for x in data.get("taken_out", ()))
    return _build(ChunkSignals, data | {"taken_out": taken_out})  # type: ignore[no-any-return]


def quality_report_from_dict(d: dict[str, Any]) -> QualityReport:
    """Read back a QualityReport written with ``types.to_dict`` (quality.json; one written
    before ``taken_out`` existed reads with none)."""
    repairs = tuple(
        _build(
            Repair,
            r
            | {
                "before": _signals(r["before"]),
                "after": _signals(r["after"]),
                "policy": dict(r.get("policy", {})),
            },
        )
        for r in d.get("repairs", [])
    )
    return QualityReport(
        episode_id=d["episode_id"],
        signals=tuple(_signals(s) for s in d["signals"]),
        flags=tuple(_build(ChunkFlags, f) for f in d["flags"]),
        thresholds=_build(QualityThresholds, d.get("thresholds", {})),
        repairs=repairs,
    )
