"""One episode end to end: source → audio → chunks → transcripts → merged transcript → score.

The CLI calls :func:`run_episode`; Prefect flows call the same stage functions one by one
(:func:`prepare_episode`, ``transcribe_chunk`` per chunk, :func:`finish_episode`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.asr.options import LoadedModel, TranscribeOptions, resolve_device
from pipeline.audio.chunk import ChunkOptions, chunk_audio
from pipeline.audio.decode import decode_audio, verify_decoded
from pipeline.audio.diarize import (
    Diarization,
    DiarizeOptions,
    check_diarizer,
    diarize_audio,
    prepare_diarizer,
)
from pipeline.core.attribution import attribute_speakers
from pipeline.core.errors import OptionsError
from pipeline.core.storage import Storage
from pipeline.core.store import (
    DEFAULT_AUDIO_ROOT,
    DEFAULT_TRANSCRIPTS_ROOT,
    atomic_files,
    check_episode_id,
    episode_dir,
    json_bytes,
    read_json,
)
from pipeline.core.transcript import merge_transcripts, render_transcript
from pipeline.core.types import (
    ChunkManifest,
    ChunkTranscript,
    Person,
    Score,
    SpeakerSpan,
    Transcript,
    to_dict,
)
from pipeline.core.version import code_version
from pipeline.quality.history import (
    HISTORY_NAME,
    RunRecord,
    append_record,
    make_record,
    new_run_id,
    put_record,
)
from pipeline.quality.repair import RepairPolicy, repair_chunks
from pipeline.quality.report import (
    QUALITY_NAME,
    REFERENCE_NAME,
    REFERENCE_TURNS_NAME,
    REPORT_NAME,
    RUN_NAME,
    ReportInput,
    flags_by_chunk,
    preload_plotting,
    render_html_report,
)
from pipeline.quality.score import score_transcript
from pipeline.quality.signals import QualityReport, screen_chunks
from pipeline.quality.speakers import (
    SpeakerNaming,
    add_speaker_scores,
    hypothesis_turns,
    name_speakers_by_mentions,
    name_speakers_by_time,
    name_speakers_by_words,
    rename_speakers,
    speaker_spans,
)
from pipeline.sources import catalog
from pipeline.sources.fetch import episode_id_for, fetch_source
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import Reference
from pipeline.sources.rttm import to_rttm

if TYPE_CHECKING:
    from pipeline.asr.cache import ChunkResultStore
    from pipeline.asr.weights import WeightsSource

TRANSCRIPTS_PREFIX = "transcripts"  # the storage root's counterpart of the transcripts root
# Distinct from any downloaded file name, so decoding never targets its own input.
DECODED_NAME = "decoded-16k-mono.wav"
# The diarizer's own output beside the transcript: its turns as RTTM, and as JSON with how
# they were made (models and hashes, options, code version).
SPEAKERS_RTTM_NAME = "speakers.rttm"
# A diarizer label takes a reference name when at least this share of its time (or words)
# is with that name (rename_speakers' default).
NAME_AGREEMENT = 0.5
DIARIZATION_NAME = "diarization.json"


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
    chunks_reused: int = 0  # chunk transcripts taken from the store (an earlier, cut-short run)

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
    max_duration_s: float | None = None,
) -> ChunkManifest:
    """Fetch the source (within ``fetch_limits``), decode it once to 16 kHz mono, and cut it
    into chunks. An unsafe ``episode_id`` is refused before anything is written; an episode
    longer than ``max_duration_s`` fails (AudioError) once that much is decoded."""
    episode_id = episode_id or episode_id_for(source)
    episode_audio = episode_dir(audio_root, episode_id)
    src = fetch_source(source, episode_audio, limits=fetch_limits)
    decoded = decode_audio(
        src.path,
        episode_audio / DECODED_NAME,
        source_sha256=src.sha256,
        max_duration_s=max_duration_s,
        label=source,
    )
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


def diarize_episode(manifest: ChunkManifest, options: DiarizeOptions) -> Diarization:
    """Who speaks when in the whole episode (the embeddings need all of it, not chunks),
    from its decoded WAV once checked against the manifest's sha256 (AudioError if changed)."""
    audio = verify_decoded(manifest.audio, manifest.episode_id)
    return diarize_audio(audio.path, manifest.episode_id, options)


def name_speakers(
    transcript: Transcript,
    reference: Reference | None,
    rttm: Sequence[SpeakerSpan] | None,
    persons: Sequence[Person] = (),
) -> SpeakerNaming | None:
    """Map the diarizer's labels onto the names a reference gives: by time against an RTTM,
    else by aligned words against a "Name: …" reference, else after the feed's ``persons`` by
    what the speakers say; None when none of them names anyone."""
    if rttm:
        return name_speakers_by_time(speaker_spans(transcript), rttm)
    if reference is not None and any(t.speaker for t in reference.turns):
        return name_speakers_by_words(hypothesis_turns(transcript), reference.turns)
    if persons:
        return name_speakers_by_mentions(hypothesis_turns(transcript), persons)
    return None


def label_speakers(
    transcript: Transcript,
    diarization: Diarization,
    reference: Reference | None = None,
    rttm: Sequence[SpeakerSpan] | None = None,
    persons: Sequence[Person] = (),
) -> tuple[Transcript, Diarization]:
    """``transcript`` with a speaker on every segment and word (segments cut at turn
    changes), named after the reference's speakers (else the feed's ``persons``, see
    :func:`name_speakers`) where the mapping is sure enough, and the
    diarization with its turns named the same way. The provenance of both says how the turns
    were made and how sure each name is."""
    segments = attribute_speakers(transcript.segments, diarization.turns)
    labelled = dataclasses.replace(transcript, segments=segments)
    naming = name_speakers(labelled, reference, rttm, persons)
    names: dict[str, str] = {}
    if naming is not None:
        labelled = rename_speakers(labelled, naming, NAME_AGREEMENT)
        names = naming.sure(NAME_AGREEMENT)
    record = diarization.provenance | {
        "speakers": len(diarization.speakers),
        "elapsed_s": diarization.elapsed_s,
        "naming": None if naming is None else to_dict(naming),
    }
    named = dataclasses.replace(
        diarization,
        turns=tuple(
            dataclasses.replace(t, speaker=names.get(t.speaker, t.speaker))
            for t in diarization.turns
        ),
        provenance=record,
    )
    provenance = transcript.provenance | {"diarization": record}
    return dataclasses.replace(labelled, provenance=provenance), named


def diarization_files(diarization: Diarization) -> dict[str, bytes]:
    """speakers.rttm and diarization.json: the turns as the diarizer found them."""
    return {
        SPEAKERS_RTTM_NAME: to_rttm(diarization.turns, diarization.episode_id).encode("utf-8"),
        DIARIZATION_NAME: json_bytes(to_dict(diarization)),
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
    rttm: Sequence[SpeakerSpan] | None = None,
    title: str | None = None,
    storage: Storage | None = None,
    diarization: Diarization | None = None,
    persons: Sequence[Person] = (),
) -> tuple[Transcript, Score | None, dict[str, Path]]:
    """Merge, score, flag, write the outputs and report atomically, and record the run.

    With a shared ``storage`` root, the files and the history record are also put there
    (``publish_outputs``), once they are written here.

    ``quality`` comes from the repair step when it ran; otherwise the chunks are screened
    and assessed here. ``elapsed_s`` (wall time so far) gives the report its RTFx; ``title``
    is recorded in run.json so the episode can be found by it. The run is appended to
    ``history_path`` (default: ``history.jsonl`` beside ``out_dir``) after every file is
    written. With ``diarization``, every segment gets a speaker (see :func:`label_speakers`)
    and the turns are written beside the transcript; ``persons`` (the feed's
    ``<podcast:person>`` list) name the speakers when no reference does.
    """
    out_dir = Path(out_dir)
    if quality is None:  # not screened by the repair step: segments over no speech go here
        chunk_transcripts, quality = screen_chunks(
            manifest.episode_id, manifest.chunks, chunk_transcripts
        )
    transcript = merge_transcripts(
        manifest.episode_id,
        manifest.audio.duration_s,
        chunk_transcripts,
        build_provenance(manifest, chunk_transcripts),
    )
    if diarization is not None:
        transcript, diarization = label_speakers(transcript, diarization, reference, rttm, persons)
    # Score, assess and render before writing anything: a failure in any of them must not
    # leave new files beside old ones.
    score = score_transcript(transcript, reference.text) if reference is not None else None
    if score is not None and reference is not None:  # cpWER and DER where they apply
        turns = diarization.turns if diarization is not None else None
        score = add_speaker_scores(score, transcript, reference.turns, rttm, turns=turns)
    run_id = run_id or new_run_id()
    ref_turns = reference.turns if reference is not None else ()
    report_input = ReportInput(
        transcript,
        score,
        quality,
        reference.text if reference else None,
        elapsed_s,
        run_id,
        reference_turns=ref_turns,
    )
    report_html = render_html_report(report_input)
    contents = render_transcript(transcript)
    scored = score_data(transcript, score, reference)
    speakers = report_input.speaker_section if score is not None and ref_turns else None
    if speakers is not None and speakers.speakers:
        scored["per_speaker"] = speakers.as_dict()
    contents["score.json"] = json_bytes(scored)
    contents[QUALITY_NAME] = json_bytes(to_dict(quality))
    if reference is not None:
        contents[REFERENCE_NAME] = reference.text.encode("utf-8")
    if diarization is not None:
        contents |= diarization_files(diarization)
    if ref_turns:
        contents[REFERENCE_TURNS_NAME] = json_bytes(to_dict(ref_turns))
    run = {"run_id": run_id, "episode_id": transcript.episode_id, "elapsed_s": elapsed_s}
    # the title: what users call the episode (rerun-chunks finds it by this)
    contents[RUN_NAME] = json_bytes(run | {"feed": feed, "title": title})
    contents[REPORT_NAME] = report_html.encode("utf-8")
    # All files or none: a full disk midway leaves the earlier run's set whole.
    with atomic_files() as stage:
        files = {name: stage(out_dir / name, data) for name, data in contents.items()}
    if reference is None:  # a reference left from an earlier run would make a rebuilt report lie
        (out_dir / REFERENCE_NAME).unlink(missing_ok=True)
    if diarization is None:  # nor may turns of an earlier run pass for this one's
        for name in (SPEAKERS_RTTM_NAME, DIARIZATION_NAME):
            (out_dir / name).unlink(missing_ok=True)
    if not ref_turns:
        (out_dir / REFERENCE_TURNS_NAME).unlink(missing_ok=True)
    record = make_record(
        transcript,
        score,
        feed=feed,
        elapsed_s=elapsed_s,
        flags=flags_by_chunk(quality),
        run_id=run_id,
    )
    append_record(history_path or out_dir.parent / HISTORY_NAME, record)
    if storage is not None:
        publish_outputs(storage, transcript.episode_id, files, record)
    return transcript, score, files


def publish_outputs(
    storage: Storage, episode_id: str, files: dict[str, Path], record: RunRecord
) -> list[str]:
    """Put an episode's output files under ``transcripts/<episode_id>/`` of the storage root,
    then its history record (one object of its own); returns the keys written."""
    prefix = f"{TRANSCRIPTS_PREFIX}/{check_episode_id(episode_id)}"
    keys = [storage.put_file(f"{prefix}/{name}", path) for name, path in sorted(files.items())]
    return [*keys, put_record(storage, record)]


def score_data(
    transcript: Transcript, score: Score | None, reference: Reference | None
) -> dict[str, Any]:
    """score.json: the numbers, the reference they came from and how the transcript was made."""
    return {
        "episode_id": transcript.episode_id,
        "wer": score.wer if score else None,
        "reference": None
        if reference is None
        else {"origin": reference.origin, "format": reference.format, "sha256": reference.sha256},
        "score": to_dict(score) if score else None,
        "provenance": transcript.provenance,
        "scored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


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
    chunk_store: Path | None = None,
    max_duration_s: float | None = None,
    rttm: Sequence[SpeakerSpan] | None = None,
    diarize_options: DiarizeOptions | None = None,
    persons: Sequence[Person] = (),
) -> EpisodeResult:
    """Transcribe (and score) one episode; nothing is written to ``out_dir`` unless all succeed.

    With ``diarize_options`` the episode is diarized in a thread beside the transcription
    (its speaker encoder and Whisper's decoder take turns on the cores) and every segment
    gets a speaker, named after ``persons`` (who takes part, as a feed lists them) where what
    they say shows who is who and no labelled reference or RTTM names them.

    Each finished chunk transcript is stored at once in ``chunk_store`` (default
    ``<audio_root>/.chunk-results``): a run cut short (killed, crashed) is resumed by the same
    command, which reuses the stored chunks and transcribes only the others.
    """
    # Imported here: torch and whisper load only when transcription really starts.
    from pipeline.asr.cache import STORE_DIRNAME, ChunkResultStore, conditioned_on
    from pipeline.asr.loading import load_model
    from pipeline.asr.transcribe import transcribe_chunks

    started = time.perf_counter()
    options = transcribe_options or TranscribeOptions()
    check_options(options)  # an unknown model fails before any audio work
    # Diarization needs the whole episode, not chunks: it runs in a thread beside the
    # transcription (the speaker encoder and Whisper's decoder share the cores); its imports
    # and model hashes are done first, while the episode is fetched and decoded.
    if diarize_options is not None:
        check_diarizer()  # a missing package fails now, not after the transcription
    pool = ThreadPoolExecutor(1, thread_name_prefix="diarize")
    try:
        warming = pool.submit(prepare_diarizer) if diarize_options else None
        manifest = prepare_episode(
            source, episode_id, audio_root, chunk_options, fetch_limits, max_duration_s
        )
        preload_plotting()  # for the report, while the chunks are transcribed
        # Queued behind the warm-up in the pool's one thread; not waited for here, so that
        # loading the model and transcribing start at once.
        diarizing = (
            pool.submit(diarize_episode, manifest, diarize_options) if diarize_options else None
        )
        loaded = load_model(options)
        if on_chunks_ready is not None:
            on_chunks_ready(manifest)
        total = len(manifest.chunks)
        store = ChunkResultStore(chunk_store or Path(audio_root) / STORE_DIRNAME)
        by_index = {c.index: c for c in manifest.chunks}
        reused = stored_transcripts(manifest, store, options, loaded)
        done = {r.chunk_index for r in reused}
        for r in reused:
            if on_chunk:
                on_chunk(r, total)

        def finished(ct: ChunkTranscript) -> None:
            chunk = by_index[ct.chunk_index]
            before = conditioned_on(manifest.chunks, chunk, options)
            store.put(ct, chunk, options, loaded, before)  # before anything else
            if on_chunk:
                on_chunk(ct, total)

        fresh = transcribe_chunks(
            [c for c in manifest.chunks if c.index not in done],
            options,
            on_done=finished,
            loaded=loaded,
            known={r.chunk_index: r for r in reused},  # what conditioned chunks follow
        )
        return repair_and_finish(
            manifest,
            [*reused, *fresh],
            EpisodeOutputs(
                out_dir=Path(out_dir) if out_dir else None,
                transcripts_root=Path(transcripts_root),
                reference=reference,
                feed=feed,
                rttm=rttm,
                persons=tuple(persons),
            ),
            options,
            loaded,
            repair_policy,
            started=started,
            chunks_reused=len(reused),
            diarization=(
                (lambda: warming.result() or diarizing.result())
                if warming is not None and diarizing is not None
                else None
            ),
        )

    except BaseException:
        # Nobody will use the speakers: drop a diarization still queued, do not wait for it.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)


def stored_transcripts(
    manifest: ChunkManifest,
    store: ChunkResultStore,
    options: TranscribeOptions,
    loaded: LoadedModel,
) -> list[ChunkTranscript]:
    """The episode's chunk transcripts already in ``store``, made exactly this way (an earlier
    run cut short, or a backfill that failed after them)."""
    from pipeline.asr.cache import conditioned_on

    return [
        r
        for c in manifest.chunks
        if (r := store.get(c, options, loaded, conditioned_on(manifest.chunks, c, options)))
        is not None
    ]


@dataclass(frozen=True)
class EpisodeOutputs:
    """Where an episode's outputs go and what they are scored and labelled with."""

    transcripts_root: Path  # history.jsonl is here; the outputs in <root>/<episode id>/ ...
    out_dir: Path | None = None  # ... unless given
    reference: Reference | None = None
    feed: str | None = None
    title: str | None = None
    rttm: Sequence[SpeakerSpan] | None = None
    persons: tuple[Person, ...] = ()  # names for the diarizer's speakers (a feed's list)

    def folder(self, episode_id: str) -> Path:
        """The episode's output folder."""
        return self.out_dir or episode_dir(self.transcripts_root, episode_id)


def repair_and_finish(
    manifest: ChunkManifest,
    chunk_transcripts: Sequence[ChunkTranscript],
    outputs: EpisodeOutputs,
    options: TranscribeOptions,
    loaded: LoadedModel,
    repair_policy: RepairPolicy | None = None,
    *,
    started: float,
    chunks_reused: int = 0,
    diarization: Callable[[], Diarization | None] | None = None,
) -> EpisodeResult:
    """An episode's last steps once every chunk is transcribed: retry flagged chunks, then
    merge, score, write and record (``finish_episode``). ``started``: the
    ``time.perf_counter()`` from which the episode's run is timed. ``diarization``: called
    after the repair for the episode's speaker turns (a diarizer running beside it)."""
    chunk_transcripts = sorted(chunk_transcripts, key=lambda ct: ct.chunk_index)
    # Flag suspect chunks and transcribe each once more (RepairPolicy(enabled=False): flag only).
    chunk_transcripts, quality = repair_chunks(
        manifest, chunk_transcripts, options, loaded, repair_policy or RepairPolicy()
    )
    out = outputs.folder(manifest.episode_id)
    run_id = new_run_id()
    transcript, score, files = finish_episode(
        manifest,
        chunk_transcripts,
        outputs.reference,
        out,
        quality=quality,
        elapsed_s=time.perf_counter() - started,
        feed=outputs.feed,
        history_path=outputs.transcripts_root / HISTORY_NAME,
        run_id=run_id,
        rttm=outputs.rttm,
        title=outputs.title,
        diarization=diarization() if diarization is not None else None,
        persons=outputs.persons,
    )
    return EpisodeResult(
        episode_id=manifest.episode_id,
        out_dir=out,
        files=files,
        duration_s=manifest.audio.duration_s,
        chunks=len(manifest.chunks),
        elapsed_s=time.perf_counter() - started,
        transcript=transcript,
        score=score,
        quality=quality,
        run_id=run_id,
        chunks_reused=chunks_reused,
    )


def check_options(options: TranscribeOptions, weights: WeightsSource | None = None) -> None:
    """Fail now, before the episode is downloaded or decoded, when the model or the device
    cannot be used. The model is resolved offline; with ``weights``, a standard name that is
    not on this machine is downloaded from there once (an unknown name fails at once). An
    explicit ``cuda`` is checked against torch (``auto`` always works)."""
    from pipeline.asr.weights import ensure_model, resolve_model

    if weights is None:
        resolve_model(options.model)
    else:
        ensure_model(options.model, weights)
    if options.device == "cuda":
        resolve_device(options.device)


@dataclass(frozen=True)
class EpisodeRef:
    """An episode that has been transcribed: its id (folder name) and the title users know."""

    episode_id: str
    title: str


def find_episode(
    given: str, transcripts_root: Path, db: catalog.CatalogLocation | None = None
) -> EpisodeRef:
    """The transcribed episode a user means by ``given``: its id, or its title (as recorded in
    run.json, or in the feed catalog ``db``), case and surrounding spaces ignored.

    OptionsError when nothing or more than one episode matches, naming some that exist.
    """
    root = Path(transcripts_root)
    key = given.strip()
    titles: dict[str, str] = {}  # episode id -> title, for every transcribed episode
    for run in sorted(root.glob("*/run.json")):
        try:
            titles[run.parent.name] = str(read_json(run).get("title") or "")
        except (OSError, ValueError):
            continue
    if db is not None and catalog.catalog_exists(db):
        for row in catalog.list_episodes(db):
            if row.episode_id in titles and not titles[row.episode_id]:
                titles[row.episode_id] = row.title
    if key in titles:
        return EpisodeRef(key, titles[key] or key)
    matches = [i for i, t in titles.items() if t and t.casefold() == key.casefold()]
    if len(matches) == 1:
        return EpisodeRef(matches[0], titles[matches[0]])
    if matches:
        raise OptionsError(
            f"{len(matches)} episodes are titled {key!r} ({', '.join(matches)}): give the id"
        )
    known = ", ".join(repr(t or i) for i, t in list(titles.items())[:8])
    raise OptionsError(
        f"no transcribed episode has the id or title {key!r} in {root}"
        + (f"; some that do: {known}" if known else ": transcribe it first")
    )
