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

from pipeline.audio import decode_audio
from pipeline.chunk import ChunkOptions, chunk_audio
from pipeline.fetch import episode_id_for, fetch_source
from pipeline.reference import Reference
from pipeline.score import score_transcript
from pipeline.store import DEFAULT_AUDIO_ROOT, DEFAULT_TRANSCRIPTS_ROOT, write_json_atomic
from pipeline.transcript import merge_transcripts, write_transcript
from pipeline.types import ChunkManifest, ChunkTranscript, Score, Transcript, to_dict
from pipeline.version import code_version

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

    @property
    def rtfx(self) -> float:
        """Seconds of audio per second of wall-clock time, end to end."""
        return self.duration_s / self.elapsed_s if self.elapsed_s > 0 else 0.0


def prepare_episode(
    source: str,
    episode_id: str | None = None,
    audio_root: Path = DEFAULT_AUDIO_ROOT,
    chunk_options: ChunkOptions | None = None,
) -> ChunkManifest:
    """Fetch the source, decode it once to 16 kHz mono, and cut it into chunks."""
    episode_id = episode_id or episode_id_for(source)
    episode_audio = Path(audio_root) / episode_id
    src = fetch_source(source, episode_audio)
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
        "transcribe_options": options[0] if options and all(o == options[0] for o in options)
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
) -> tuple[Transcript, Score | None, dict[str, Path]]:
    """Merge, score (when there is a reference) and write the episode's outputs atomically."""
    transcript = merge_transcripts(
        manifest.episode_id,
        manifest.audio.duration_s,
        chunk_transcripts,
        build_provenance(manifest, chunk_transcripts),
    )
    # Score before writing anything: a scoring failure must not leave new files beside old ones.
    score = score_transcript(transcript, reference.text) if reference is not None else None
    files = write_transcript(transcript, out_dir)
    files["score.json"] = write_score(out_dir / "score.json", transcript, score, reference)
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
    transcribe_options: Any = None,
    chunk_options: ChunkOptions | None = None,
    episode_id: str | None = None,
    audio_root: Path = DEFAULT_AUDIO_ROOT,
    transcripts_root: Path = DEFAULT_TRANSCRIPTS_ROOT,
    out_dir: Path | None = None,
    on_chunk: Callable[[ChunkTranscript, int], None] | None = None,
    on_chunks_ready: Callable[[ChunkManifest], None] | None = None,
) -> EpisodeResult:
    """Transcribe (and score) one episode; nothing is written to ``out_dir`` unless all succeed."""
    # Imported here: torch and whisper load only when transcription really starts.
    from pipeline.models import resolve_model
    from pipeline.transcribe import TranscribeOptions, load_model, transcribe_chunks

    started = time.perf_counter()
    options = transcribe_options or TranscribeOptions()
    resolve_model(options.model)  # an unknown model fails before any audio work (no torch yet)
    manifest = prepare_episode(source, episode_id, audio_root, chunk_options)
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
    out = Path(out_dir) if out_dir else Path(transcripts_root) / manifest.episode_id
    transcript, score, files = finish_episode(manifest, chunk_transcripts, reference, out)
    return EpisodeResult(
        episode_id=manifest.episode_id,
        out_dir=out,
        files=files,
        duration_s=manifest.audio.duration_s,
        chunks=total,
        elapsed_s=time.perf_counter() - started,
        transcript=transcript,
        score=score,
    )
