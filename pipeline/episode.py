"""One episode end to end: source → audio → chunks → transcripts → merged transcript → score.

The CLI calls :func:`run_episode`; Prefect flows call the same stage functions one by one
(:func:`prepare_episode`, ``transcribe_chunk`` per chunk, :func:`finish_episode`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.asr.options import TranscribeOptions
from pipeline.audio.chunk import ChunkOptions, chunk_audio
from pipeline.audio.decode import decode_audio
from pipeline.core.store import (
    DEFAULT_AUDIO_ROOT,
    DEFAULT_TRANSCRIPTS_ROOT,
    episode_dir,
    write_json_atomic,
    write_text_atomic,
)
from pipeline.core.transcript import merge_transcripts, write_transcript
from pipeline.core.types import ChunkManifest, ChunkTranscript, Score, Transcript, to_dict
from pipeline.core.version import code_version
from pipeline.quality.history import HISTORY_NAME, append_record, make_record, new_run_id
from pipeline.quality.repair import RepairPolicy, repair_chunks
from pipeline.quality.report import (
    QUALITY_NAME,
    REFERENCE_NAME,
    REPORT_NAME,
    RUN_NAME,
    ReportInput,
    flags_by_chunk,
    preload_plotting,
    render_html_report,
)
from pipeline.quality.score import score_transcript
from pipeline.quality.signals import QualityReport, assess_chunks
from pipeline.sources.fetch import episode_id_for, fetch_source
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import Reference

# Distinct from any downloaded file name, so decoding never targets its own input.
DECODED_NAME = "decoded-16k-mono.wav"


@dataclass(frozen=True)
class EpisodeResult:
    """What a finished episode run produced, and how fast."""

    episode_id: str
    out_dir: Path
    files: dict[str, Path]
    duration_s: float
    chunks: int
    elapsed_s: float  # whole run: fetch, decode, chunk, transcribe, score, write
    transcript: Transcript
    score: Score | None
    quality: QualityReport | None = None  # reference-free signals, flags and repairs
    run_id: str | None = None  # this run's line in transcripts/history.jsonl

    @property
    def rtfx(self) -> float:
        """Seconds of audio per second of wall-clock time, end to end."""
        return self.duration_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


def prepare_episode(
    source: str,
    episode_id: str | None = None,
    audio_root: Path = DEFAULT_AUDIO_ROOT,
    chunk_options: ChunkOptions | None = None,
    fetch_limits: FetchLimits | None = None,
) -> ChunkManifest:
    """Fetch the source (within ``fetch_limits``), decode it once to 16 kHz mono, and cut it
    into chunks. An unsafe ``episode_id`` is refused before anything is written."""
    episode_id = episode_id or episode_id_for(source)
    episode_audio = episode_dir(audio_root, episode_id)
    src = fetch_source(source, episode_audio, limits=fetch_limits)
    decoded = decode_audio(src.path, episode_audio / DECODED_NAME, source_sha256=src.sha256)
    return chunk_audio(decoded, episode_audio, episode_id, chunk_options or ChunkOptions())


def build_provenance(
    manifest: ChunkManifest, chunk_transcripts: Sequence[ChunkTranscript]
) -> dict[str, Any]:
    """How this transcript was made: code, weights, options, source audio."""
    models = {(c.model.name, c.model.sha256, c.model.source) for c in chunk_transcripts}
    options = [c.options for c in chunk_transcripts]
    return {
        "code_version": code_version(),
        "models": [{"name": n, "sha256": h, "source": s} for n, h, s in sorted(models)],
        "transcribe_options": options[0]
        if options and all(o == options[0] for o in options)
        else options,
        "chunk_options": manifest.options,
        "source_sha256": manifest.audio.source_sha256,
        "chunks": len(manifest.chunks),
    }


def finish_episode(
    manifest: ChunkManifest,
    chunk_transcripts: Sequence[ChunkTranscript],
    reference: Reference | None,
    out_dir: Path,
    *,
    quality: QualityReport | None = None,
    elapsed_s: float | None = None,
    feed: str | None = None,
    history_path: Path | None = None,
    run_id: str | None = None,
) -> tuple[Transcript, Score | None, dict[str, Path]]:
    """Merge, score, flag, write the outputs and report atomically, and record the run.

    ``quality`` comes from the repair step when it ran; otherwise the chunks are assessed
    here. ``elapsed_s`` (wall time so far) gives the report its RTFx. The run is appended to
    ``history_path`` (default: ``history.jsonl`` beside ``out_dir``) after every file is written.
    """
    out_dir = Path(out_dir)
    transcript = merge_transcripts(
        manifest.episode_id,
        manifest.audio.duration_s,
        chunk_transcripts,
        build_provenance(manifest, chunk_transcripts),
    )
    # Score, assess and render before writing anything: a failure in any of them must not
    # leave new files beside old ones.
    score = score_transcript(transcript, reference.text) if reference is not None else None
    if quality is None:
        quality = assess_chunks(manifest.episode_id, manifest.chunks, transcript.chunks)
    run_id = run_id or new_run_id()
    report_input = ReportInput(
        transcript, score, quality, reference.text if reference else None, elapsed_s, run_id
    )
    report_html = render_html_report(report_input)
    files = write_transcript(transcript, out_dir)
    files["score.json"] = write_score(out_dir / "score.json", transcript, score, reference)
    files[QUALITY_NAME] = write_json_atomic(out_dir / QUALITY_NAME, to_dict(quality))
    if reference is not None:
        files[REFERENCE_NAME] = write_text_atomic(out_dir / REFERENCE_NAME, reference.text)
    else:  # a reference left from an earlier run would make a rebuilt report lie
        (out_dir / REFERENCE_NAME).unlink(missing_ok=True)
    files[RUN_NAME] = write_json_atomic(
        out_dir / RUN_NAME,
        {
            "run_id": run_id,
            "episode_id": transcript.episode_id,
            "elapsed_s": elapsed_s,
            "feed": feed,
        },
    )
    files[REPORT_NAME] = write_text_atomic(out_dir / REPORT_NAME, report_html)
    record = make_record(
        transcript,
        score,
        feed=feed,
        elapsed_s=elapsed_s,
        flags=flags_by_chunk(quality),
        run_id=run_id,
    )
    append_record(history_path or out_dir.parent / HISTORY_NAME, record)
    return transcript, score, files


def write_score(
    path: Path, transcript: Transcript, score: Score | None, reference: Reference | None
) -> Path:
    """score.json: the numbers, the reference they came from and how the transcript was made."""
    data: dict[str, Any] = {
        "episode_id": transcript.episode_id,
        "wer": score.wer if score else None,
        "reference": None
        if reference is None
        else {"origin": reference.origin, "format": reference.format, "sha256": reference.sha256},
        "score": to_dict(score) if score else None,
        "provenance": transcript.provenance,
        "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return write_json_atomic(path, data)


def run_episode(
    source: str,
    *,
    reference: Reference | None = None,
    transcribe_options: TranscribeOptions | None = None,
    chunk_options: ChunkOptions | None = None,
    episode_id: str | None = None,
    audio_root: Path = DEFAULT_AUDIO_ROOT,
    transcripts_root: Path = DEFAULT_TRANSCRIPTS_ROOT,
    out_dir: Path | None = None,
    on_chunk: Callable[[ChunkTranscript, int], None] | None = None,
    on_chunks_ready: Callable[[ChunkManifest], None] | None = None,
    repair_policy: RepairPolicy | None = None,
    feed: str | None = None,
    fetch_limits: FetchLimits | None = None,
) -> EpisodeResult:
    """Transcribe (and score) one episode; nothing is written to ``out_dir`` unless all succeed."""
    # Imported here: torch and whisper load only when transcription really starts.
    from pipeline.asr.loading import load_model
    from pipeline.asr.transcribe import transcribe_chunks
    from pipeline.asr.weights import resolve_model

    started = time.perf_counter()
    options = transcribe_options or TranscribeOptions()
    resolve_model(options.model)  # an unknown model fails before any audio work (no torch yet)
    manifest = prepare_episode(source, episode_id, audio_root, chunk_options, fetch_limits)
    preload_plotting()  # for the report, while the chunks are transcribed
    loaded = load_model(options)
    if on_chunks_ready is not None:
        on_chunks_ready(manifest)
    total = len(manifest.chunks)
    chunk_transcripts = transcribe_chunks(
        manifest.chunks,
        options,
        on_done=(lambda ct: on_chunk(ct, total)) if on_chunk else None,
        loaded=loaded,
    )
    # Flag suspect chunks and transcribe each once more (RepairPolicy(enabled=False): flag only).
    chunk_transcripts, quality = repair_chunks(
        manifest, chunk_transcripts, options, loaded, repair_policy or RepairPolicy()
    )
    out = Path(out_dir) if out_dir else episode_dir(transcripts_root, manifest.episode_id)
    run_id = new_run_id()
    transcript, score, files = finish_episode(
        manifest,
        chunk_transcripts,
        reference,
        out,
        quality=quality,
        elapsed_s=time.perf_counter() - started,
        feed=feed,
        history_path=Path(transcripts_root) / HISTORY_NAME,
        run_id=run_id,
    )
    return EpisodeResult(
        episode_id=manifest.episode_id,
        out_dir=out,
        files=files,
        duration_s=manifest.audio.duration_s,
        chunks=total,
        elapsed_s=time.perf_counter() - started,
        transcript=transcript,
        score=score,
        quality=quality,
        run_id=run_id,
    )
