"""Flows for one episode: ``transcribe_episode`` and ``rerun_chunks``.

prepare (fetch, decode, cut) → one task per chunk → finish (merge, score, write) → artifacts.
Chunk results are persisted in the results folder (PODSCRIBE_RESULTS_DIR) under a cache key
made of the task's inputs (chunk incl. its sha256, options, episode id) and the flow run id, so
Retry on a failed run takes the finished chunks from disk (they show as Cached) and transcribes
only the ones that failed. The model is never a task argument: each process loads it once.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)
from prefect.exceptions import FailedRun
from prefect.futures import PrefectFuture, as_completed
from prefect.runtime import flow_run, task_run
from prefect.states import Completed, Failed, State

from flows.device import (
    Reservation,
    device_slot,
    diarize_slot,
    ensure_device_limit,
    reserve_device_slots,
)
from flows.forms import (
    BeamSize,
    ChunkNumbers,
    DeviceChoice,
    EpisodeId,
    EpisodeKey,
    Feed,
    MaxChunk,
    Model,
    Persons,
    ReferenceText,
    Repair,
    RerunReference,
    Source,
    Speakers,
    StyleChoice,
    Title,
)
from flows.report import (
    artifact_keys,
    chunk_rows,
    failed_once,
    one_line,
    outcome_message,
    outputs_markdown,
    quiet_failed_state_logs,
)
from flows.runners import SettingsTaskRunner
from flows.settings import DIARIZE_LIMIT, Settings, load_settings, result_storage
from pipeline.asr.cache import STORE_DIRNAME, ChunkResultStore, StoredChunkResults
from pipeline.asr.loading import load_model
from pipeline.asr.microbatch import MicroBatcher, shared_batcher
from pipeline.asr.options import TranscribeOptions
from pipeline.audio.chunk import MANIFEST_NAME, ChunkOptions, load_manifest, verify_chunk
from pipeline.audio.diarize import (
    Diarization,
    DiarizeOptions,
    diarization_from_dict,
    parse_speakers,
)
from pipeline.audio.remote import fetch_audio, fetch_chunk, publish_chunks
from pipeline.core.errors import (
    DiarizationError,
    FeedError,
    OptionsError,
    PodscribeError,
    TranscriptionError,
)
from pipeline.core.storage import Storage
from pipeline.core.store import episode_dir, read_json
from pipeline.core.transcript import load_transcript
from pipeline.core.types import (
    Chunk,
    ChunkManifest,
    ChunkTranscript,
    Person,
    chunk_index_of,
    chunk_number,
)
from pipeline.episode import (
    DIARIZATION_NAME,
    check_options,
    diarize_episode,
    find_episode,
    finish_episode,
    prepare_episode,
)
from pipeline.quality.repair import RepairOutcome, RepairPolicy, repair_chunk, wants_repair
from pipeline.quality.report import (
    REPORT_NAME,
    load_report_input,
    preload_plotting,
    render_markdown_report,
)
from pipeline.quality.signals import ChunkFlags, ChunkSignals, QualityReport, screen_chunks
from pipeline.settings import fetch_limits, retry_policy, weights_source
from pipeline.sources import catalog
from pipeline.sources.feed import parse_person
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import Reference, is_url, read_reference

# run_chunks announces its chunks to the flow process's micro-batcher, which waits for them
# (as long as they come within ANNOUNCE_S) instead of guessing. A Dask worker process hears no
# announcements: there a batch waits UNANNOUNCED_WAIT_S after its first chunk for others.
ANNOUNCE_S = 5.0
UNANNOUNCED_WAIT_S = 1.0
# How long run_chunks waits for the device slots it reserved before submitting the chunks
# (the tasks would wait for that acquisition anyway; once it is done, the first batch can be
# handed to the batcher).
RESERVE_WAIT_S = 2.0
# The progress artifact is updated at most this often (each update is an API call).
PROGRESS_EVERY_S = 2.0

# Chunk tasks end Failed with their one line as state message (no traceback): keep Prefect
# from logging that state a second time with an empty traceback.
quiet_failed_state_logs()

# --- tasks: one line of pipeline each ----------------------------------------------------------


@task(task_run_name="prepare {source}")
def prepare(
    source: str,
    episode_id: str | None,
    audio_root: Path,
    chunk: dict,
    limits: FetchLimits,
    max_duration_s: float | None = None,
) -> ChunkManifest:
    """Fetch, decode once and cut into chunks (reused when already cut the same way)."""
    return prepare_episode(
        source, episode_id, audio_root, ChunkOptions(**chunk), limits, max_duration_s
    )


@task(task_run_name="publish chunks of {title}")
def publish(manifest: ChunkManifest, storage_url: str, title: str, with_audio: bool = False) -> int:
    """Put the chunk WAVs (with ``with_audio`` the decoded WAV too, for the diarize task) and
    the manifest under the shared storage root, for workers that share nothing else with this
    machine; returns how many chunks were uploaded."""
    return publish_chunks(Storage(storage_url), manifest, with_audio)


@task(task_run_name="diarize {title}", persist_result=True)
def diarize(
    manifest: ChunkManifest, options: dict[str, Any], title: str, storage_url: str | None = None
) -> Diarization:
    """Who speaks when, on the whole episode (embeddings need all of it, not chunks), on a
    slot of the diarize limit. The decoded WAV is checked against the manifest's sha256
    first; on a machine that lacks it, it is fetched (checked) from the shared storage root
    into a temp folder of this task's own.

    A PodscribeError ends the task run Failed with its one line as the state message (no
    traceback), as a chunk task's does: the flow reports it once, after the chunks.
    """
    try:
        with diarize_slot():
            if storage_url is None or manifest.audio.path.is_file():
                return diarize_episode(manifest, DiarizeOptions(**options))
            with tempfile.TemporaryDirectory(prefix="podscribe-diarize-") as tmp:
                local = fetch_audio(Storage(storage_url), manifest, Path(tmp))
                return diarize_episode(local, DiarizeOptions(**options))
    except PodscribeError as exc:
        return cast(Diarization, Failed(message=one_line(exc)))


def diarize_options(speakers: str, device: str) -> DiarizeOptions | None:
    """The diarize task's options for a run's ``speakers``; None when it is off."""
    count = parse_speakers(speakers)
    return None if count is False else DiarizeOptions(speakers=count or None, device=device)


def submit_diarization(
    manifest: ChunkManifest, options: DiarizeOptions | None, title: str, settings: Settings
) -> PrefectFuture[Diarization] | None:
    """Start the diarize task beside the chunk tasks (None when ``options`` is None). Its
    result is persisted like theirs: a Retry of the run takes it from disk unless it failed."""
    if options is None:
        return None
    ensure_device_limit(settings.diarize_slots, DIARIZE_LIMIT)
    task_ = diarize.with_options(result_storage=result_storage(settings))
    return task_.submit(manifest, dataclasses.asdict(options), title, settings.storage_url)


def slot_key(chunk: Chunk) -> tuple[str, str]:
    """The key of the device slot run_chunks may take for a chunk ahead of its task."""
    return str(chunk.path), chunk.sha256


def load_reference(source: str | None, limits: FetchLimits) -> Reference | None:
    """The reference text, or None: a missing reference must not stop transcription."""
    if not source:
        return None
    try:
        return read_reference(source, limits=limits)
    except PodscribeError as exc:
        get_run_logger().warning("reference %s unusable, not scoring: %s", source, exc)
        return None


def _chunk_run_name() -> str:
    p = task_run.parameters
    return f"chunk {p['chunk'].number}/{p['total']} · {p['title']}"


@task(task_run_name=_chunk_run_name, persist_result=True)
def transcribe_one_chunk(
    chunk: Chunk,
    options: dict[str, Any],
    episode_id: str,
    total: int,
    title: str,
    storage_url: str | None = None,
) -> ChunkTranscript:
    """Verify the chunk WAV against its manifest hash, then transcribe it on a device slot.

    With a shared ``storage_url`` the task reads its chunk from there into a temp folder of
    its own (checksum-verified) and keeps its result there: it needs nothing from the disk of
    the machine that cut the episode.

    A PodscribeError (a changed chunk, a Whisper failure) ends the task run Failed with its
    one line as the state message, not logged here and without a traceback: the flow logs
    the failed chunks once, in one line, as its own final state.
    """
    try:
        if storage_url is None:
            store = ChunkResultStore(load_settings().audio_root / STORE_DIRNAME)
            return _transcribe_one_chunk(chunk, options, episode_id, store, verify_chunk)
        storage = Storage(storage_url)
        with tempfile.TemporaryDirectory(prefix="podscribe-chunk-") as tmp:

            def fetch(c: Chunk, eid: str) -> Chunk:
                return fetch_chunk(storage, eid, c, Path(tmp))

            return _transcribe_one_chunk(
                chunk, options, episode_id, StoredChunkResults(storage), fetch
            )
    except PodscribeError as exc:
        return cast(ChunkTranscript, Failed(message=one_line(exc)))


def _transcribe_one_chunk(
    chunk: Chunk,
    options: dict[str, Any],
    episode_id: str,
    store: ChunkResultStore | StoredChunkResults,
    ready: Callable[[Chunk, str], Chunk],
) -> ChunkTranscript:
    """Transcribe ``chunk`` once ``ready`` has checked it (and, from storage, fetched it)."""
    batcher = shared_batcher(UNANNOUNCED_WAIT_S)
    transcribe_options = TranscribeOptions(**options)
    with device_slot(slot_key(chunk)):
        try:
            local = ready(chunk, episode_id)
            loaded = load_model(transcribe_options)  # once per process; the batcher's too
            stored = store.get(local, transcribe_options, loaded)
        except Exception:
            # run_chunks announced it or queued it ahead: the batcher must not wait for it
            batcher.abandon(chunk, transcribe_options)
            raise
        if stored is not None:
            batcher.abandon(chunk, transcribe_options)
            get_run_logger().info("chunk %d of %s reused from the store", chunk.number, episode_id)
            return stored
        get_run_logger().info("transcribing chunk %d of %s", chunk.number, episode_id)
        result = batcher.submit(local, transcribe_options).result()
        store.put(result, local, transcribe_options, loaded)
        return result


@task(task_run_name="check chunks of {title}")
def check_chunks(
    manifest: ChunkManifest, transcripts: list[ChunkTranscript], title: str
) -> tuple[list[ChunkTranscript], QualityReport]:
    """Take out segments over no speech, then the reference-free signals and flags of every
    chunk (speech/music analysis, loops): ``screen_chunks``, as the CLI's repair step does."""
    return screen_chunks(manifest.episode_id, manifest.chunks, transcripts)


def _repair_run_name() -> str:
    p = task_run.parameters
    return f"repair chunk {p['chunk'].number}/{p['total']} · {p['title']}"


@task(task_run_name=_repair_run_name)
def repair_one_chunk(
    chunk: Chunk,
    transcript: ChunkTranscript,
    signals: ChunkSignals,
    flags: ChunkFlags,
    options: dict[str, Any],
    total: int,
    title: str,
) -> RepairOutcome:
    """Transcribe a flagged chunk once more (beam 5, fallback ladder) on a device slot and
    keep the better result by the reference-free signals."""
    get_run_logger().info("repairing chunk %d: %s", chunk.number, "; ".join(flags.reasons))
    with device_slot(slot_key(chunk)):
        return repair_chunk(chunk, transcript, signals, flags, TranscribeOptions(**options))


@task(task_run_name="merge, score and write")
def finish(
    manifest: ChunkManifest,
    transcripts: list[ChunkTranscript],
    reference: Reference | None,
    out_dir: Path,
    feed: str | None,
    elapsed_s: float,
    quality: QualityReport | None = None,
    title: str | None = None,
    storage_url: str | None = None,
    diarization: Diarization | None = None,
    persons: tuple[Person, ...] = (),
) -> tuple[Any, Any, dict[str, Path]]:
    """Merge the chunk transcripts (speakers from ``diarization``, named after ``persons``
    where the speech shows who is who), score, write the outputs
    and report atomically (and put them, with the history record, under the shared storage
    root when there is one)."""
    return finish_episode(
        manifest,
        transcripts,
        reference,
        out_dir,
        quality=quality,
        feed=feed,
        elapsed_s=elapsed_s,
        run_id=str(flow_run.id),
        title=title,
        storage=Storage(storage_url) if storage_url else None,
        diarization=diarization,
        persons=persons,
    )


def render_report(out_dir: Path) -> str:
    """The episode's quality report as markdown, from the files finish wrote."""
    return render_markdown_report(load_report_input(out_dir))


# --- composition -------------------------------------------------------------------------------


class Background:
    """API calls the flow need not wait for (artifact updates), on one thread of their own.

    Each call runs in a copy of the flow's context (so artifacts belong to the flow run), in
    the order submitted; ``close`` waits for all of them, so everything is sent before the run
    ends. A failed call is logged, never raised: a progress bar must not fail an episode.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="podscribe-artifacts")

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        context = contextvars.copy_context()
        self._pool.submit(context.run, self._call, fn, args, kwargs)

    @staticmethod
    def _call(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - reported, never raised
            get_run_logger().warning("%s failed: %s", getattr(fn, "__name__", fn), exc)

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Progress:
    """The run's progress artifact; updates go through ``Background``, the latest value only
    (a burst of finished chunks is one API call, and the flow never waits for one)."""

    def __init__(self, background: Background, key: str, description: str) -> None:
        self._background = background
        # called from sync code, async_dispatch runs it and returns the id
        self._id = cast(UUID, create_progress_artifact(0.0, key=key, description=description))
        self._lock = threading.Lock()
        self._latest: float | None = None

    def set(self, value: float) -> None:
        with self._lock:
            queued = self._latest is not None
            self._latest = value
        if not queued:
            self._background.submit(self._send)

    def _send(self) -> None:
        with self._lock:
            value, self._latest = self._latest, None
        if value is not None:
            update_progress_artifact(self._id, value)


def run_chunks(
    manifest: ChunkManifest,
    chunks: list[Chunk],
    options: TranscribeOptions,
    title: str,
    settings: Settings,
    background: Background,
) -> tuple[dict[int, ChunkTranscript], dict[int, str], dict[int, str]]:
    """Submit every chunk, wait for all; return (transcripts, statuses, errors) by chunk index.

    A failing chunk never stops the others: the caller decides what failures mean.
    """
    preload_plotting()  # for the report, while the chunks are transcribed
    slots = ensure_device_limit(settings.device_slots)
    chunk_task = transcribe_one_chunk.with_options(result_storage=result_storage(settings))
    total = len(manifest.chunks)
    progress = Progress(
        background,
        artifact_keys(manifest.episode_id).progress,
        f"chunks of {title} transcribed ({len(chunks)} to do)",
    )
    batcher = shared_batcher(UNANNOUNCED_WAIT_S)
    # The tasks run in this process and read the chunks cut here. With a shared storage root
    # they fetch their chunks into folders of their own: nothing is handed to them ahead.
    local = settings.task_runner == "threads" and not settings.storage_url
    ahead: list[Chunk] = []
    with reserve_device_slots(len(chunks) if local else 0) as reservation:
        # Acquiring is quick while the API server is quiet, slow once a dozen task runs start:
        # let it finish first unless the slots are busy elsewhere.
        reservation.wait(RESERVE_WAIT_S)
        if local:
            if (flow_run.run_count or 1) <= 1:
                # A first attempt has no persisted chunk results (their cache key holds the
                # run id): the batcher starts on the first batch now, each chunk on a slot
                # taken for it, while the chunk tasks start; each task claims its chunk and
                # its slot.
                first = chunks[: batcher.batch_size(options)]
                keys = reservation.take_ahead([slot_key(c) for c in first])
                ahead = first[: len(keys)]
                batcher.submit_ahead(ahead, options)
            batcher.expect(min(len(chunks), slots) - len(ahead), within_s=ANNOUNCE_S)
        futures = {
            chunk_task.submit(
                chunk, options.to_dict(), manifest.episode_id, total, title, settings.storage_url
            ): chunk
            for chunk in chunks
        }
        try:
            return _collect(futures, progress, batcher, reservation)
        finally:
            batcher.drop_ahead(ahead, options)  # chunks whose task failed before claiming


def _collect(
    futures: dict[PrefectFuture[ChunkTranscript], Chunk],
    progress: Progress,
    batcher: MicroBatcher,
    reservation: Reservation,
) -> tuple[dict[int, ChunkTranscript], dict[int, str], dict[int, str]]:
    """Wait for the chunk futures as they finish; update the progress artifact now and then."""
    done: dict[int, ChunkTranscript] = {}
    statuses: dict[int, str] = {}
    errors: dict[int, str] = {}
    reported = time.perf_counter()
    waiting = set(futures)
    for finished, future in enumerate(as_completed(list(futures)), start=1):
        waiting.discard(future)
        index = futures[future].index
        try:
            done[index] = future.result()
            statuses[index] = str(future.state.name).lower()  # "completed" or "cached"
        except FailedRun as exc:  # the task logged its one line; its message is the error
            statuses[index], errors[index] = "failed", one_line(exc)
        except Exception as exc:  # noqa: BLE001 - any failure of a chunk is reported as such
            statuses[index], errors[index] = "failed", f"{type(exc).__name__}: {one_line(exc)}"
        if statuses[index] == "cached":  # taken from its persisted result: it used no slot
            batcher.withdraw(1)
            reservation.cancel(1)
        due = time.perf_counter() - reported >= PROGRESS_EVERY_S and not _all_done(waiting)
        if finished == len(futures) or due:  # a batch's chunks end together: one update
            progress.set(100.0 * finished / len(futures))
            reported = time.perf_counter()
    return done, statuses, errors


def _all_done(futures: set[PrefectFuture[ChunkTranscript]]) -> bool:
    """Whether these futures have all finished already (their results are being collected)."""
    return all(
        getattr(f, "wrapped_future", None) is not None and f.wrapped_future.done()  # type: ignore[attr-defined]
        for f in futures
    )


def repair_flagged(
    manifest: ChunkManifest,
    transcripts: list[ChunkTranscript],
    repairable: set[int],
    options: TranscribeOptions,
    policy: RepairPolicy,
    title: str,
) -> tuple[list[ChunkTranscript], QualityReport]:
    """Check every chunk; transcribe the flagged ones among ``repairable`` once more, one task
    each (the same steps as ``repair_chunks`` on the CLI). A retry that fails keeps the
    first result: a repair never costs an episode."""
    transcripts, report = check_chunks(manifest, transcripts, title)
    chunks = {c.index: c for c in manifest.chunks}
    total = len(manifest.chunks)
    futures = {
        ct.chunk_index: repair_one_chunk.submit(
            chunks[ct.chunk_index], ct, sig, flag, options.to_dict(), total, title
        )
        for ct, sig, flag in zip(transcripts, report.signals, report.flags, strict=True)
        if ct.chunk_index in repairable and wants_repair(flag, policy)
    }
    kept, signals, flags, repairs = list(transcripts), list(report.signals), list(report.flags), []
    for pos, ct in enumerate(transcripts):
        future = futures.get(ct.chunk_index)
        if future is None:
            continue
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - the first pass stands
            get_run_logger().warning(
                "repair of chunk %d failed, kept as it was: %s", chunk_number(ct.chunk_index), exc
            )
            continue
        kept[pos], signals[pos], flags[pos] = outcome.transcript, outcome.signals, outcome.flags
        repairs.append(outcome.repair)
    quality = dataclasses.replace(
        report, signals=tuple(signals), flags=tuple(flags), repairs=tuple(repairs)
    )
    return kept, quality


@dataclass(frozen=True)
class EpisodeRun:
    """What the steps of one flow run share: the episode's cut, how it is transcribed and
    repaired, where outputs go, and the run's artifact thread."""

    manifest: ChunkManifest
    title: str
    options: TranscribeOptions
    policy: RepairPolicy
    settings: Settings
    background: Background
    started: float
    feed: str | None = None
    persons: tuple[Person, ...] = ()  # names for the speakers (the feed's list)


def complete_episode(
    run: EpisodeRun,
    new: dict[int, ChunkTranscript],
    kept: list[ChunkTranscript],
    statuses: dict[int, str],
    errors: dict[int, str],
    reference: Reference | None,
    diarizing: PrefectFuture[Diarization] | Diarization | None = None,
) -> dict[str, Any]:
    """Publish the chunk table; raise if chunks failed, else repair flagged chunks, finish and
    publish the report. ``diarizing``: the diarize task (or turns kept from an earlier run)."""
    manifest, title = run.manifest, run.title
    keys = artifact_keys(manifest.episode_id)
    total = len(manifest.chunks)
    if errors:
        create_table_artifact(
            chunk_rows(manifest, statuses, None, errors),
            key=keys.chunks,
            description=f"chunks of {title}: {len(errors)} of {total} failed",
        )
        first = min(errors)
        raise TranscriptionError(
            f"{len(errors)} of {total} chunks failed, first chunk {chunk_number(first)}: "
            f"{errors[first]} — fix the cause and Retry this run: finished chunks are kept"
        )
    transcripts = sorted([*kept, *new.values()], key=lambda c: c.chunk_index)
    transcripts, quality = repair_flagged(
        manifest, transcripts, set(new), run.options, run.policy, title
    )
    out_dir = run.settings.transcripts_root / manifest.episode_id
    elapsed_s = time.perf_counter() - run.started
    diarization = diarized(diarizing)
    _, score, files = finish(
        manifest,
        transcripts,
        reference,
        out_dir,
        run.feed,
        elapsed_s,
        quality,
        title,
        run.settings.storage_url,
        diarization,
        run.persons,
    )
    summary = {
        "episode_id": manifest.episode_id,
        "title": title,
        "wer": score.wer if score else None,
        "chunks": total,
        # chunk numbers as the task names show them (from 1)
        "transcribed": sorted(chunk_number(i) for i, s in statuses.items() if s == "completed"),
        "flagged": sorted(chunk_number(f.chunk_index) for f in quality.flagged()),
        "repaired": sorted(
            chunk_number(r.chunk_index) for r in quality.repairs if r.kept == "retry"
        ),
        "out_dir": str(out_dir),
        "report": str(files.get(REPORT_NAME, out_dir / REPORT_NAME)),
    }
    headline = outcome_message(summary)
    run.background.submit(
        create_table_artifact,
        chunk_rows(manifest, statuses, score, errors),
        key=keys.chunks,
        description=f"chunks of {title}: {headline}",
    )
    create_markdown_artifact(
        render_report(out_dir) + outputs_markdown(files),
        key=keys.quality,
        description=f"quality report of {title}: {headline}",
    )
    return summary


def diarized(diarizing: PrefectFuture[Diarization] | Diarization | None) -> Diarization | None:
    """The diarize task's turns; a failed task raises DiarizationError with its one line,
    after the chunks, whose results are kept for a Retry (which re-runs only what failed)."""
    if not isinstance(diarizing, PrefectFuture):
        return diarizing
    try:
        return diarizing.result()
    except FailedRun as exc:
        raise DiarizationError(
            f"diarization failed: {one_line(exc)} (the transcribed chunks are kept for a Retry)"
        ) from exc


def record_state(
    settings: Settings,
    episode_id: str | None,
    state: str,
    wer: float | None = None,
    error: str | None = None,
) -> None:
    """Update the catalog when the episode is in it (episodes of polled feeds are)."""
    if not episode_id or not catalog.catalog_exists(settings.db):
        return
    with contextlib.suppress(FeedError):  # an episode given by hand, not from a feed
        catalog.set_episode_state(
            settings.db, episode_id, state, wer=wer, error=error, retry=retry_policy(settings)
        )


def record_flow_run(settings: Settings, episode_id: str | None) -> None:
    """Note this flow run on the episode's catalog row, so a poll can tell whether it lives."""
    if episode_id and flow_run.id and catalog.catalog_exists(settings.db):
        catalog.record_flow_run(settings.db, episode_id, str(flow_run.id))


def check_inputs(
    options: TranscribeOptions, reference: str | None, settings: Settings, limits: FetchLimits
) -> Reference | None:
    """Model, device and reference, checked before the episode is downloaded or decoded (a
    standard model name not on this machine is downloaded once, here).

    A reference file that is missing or unreadable is the user's typo: it fails the run. A
    reference URL that cannot be fetched (a feed's transcript link) only leaves the episode
    unscored, logged as a warning.
    """
    check_options(options, weights_source(settings))
    if not reference:
        return None
    if is_url(reference):
        return load_reference(reference, limits)
    return read_reference(reference, limits=limits)


# --- the flows: their parameters (flows/forms.py) are what the UI's run forms show ----------


def _episode_run_name() -> str:
    p = flow_run.parameters
    return f"transcribe {p.get('title') or p.get('episode_id') or p['source']}"


def _ended(
    settings: Settings, episode_id: str | None, summary: dict[str, Any]
) -> State[dict[str, Any]]:
    """The run's final state: Completed with the headline numbers as its message."""
    record_state(settings, episode_id, "done", wer=summary["wer"])
    return Completed(message=outcome_message(summary), data=summary)


def _failed(settings: Settings, episode_id: str | None, exc: PodscribeError) -> State[Any]:
    """The run's final state after an expected failure: its one line, logged once, no
    traceback (the catalog records the same line)."""
    state = failed_once(exc)
    record_state(settings, episode_id, "failed", error=state.message)
    return state


@flow(
    name="transcribe-episode",
    flow_run_name=_episode_run_name,
    task_runner=SettingsTaskRunner(),
)
def transcribe_episode(
    source: Source,
    episode_id: EpisodeId = None,
    reference: ReferenceText = None,
    title: Title = None,
    model: Model = "tiny.en",
    device: DeviceChoice = "auto",
    max_chunk_s: MaxChunk = 30.0,
    beam_size: BeamSize = None,
    style: StyleChoice = "clean",
    feed: Feed = None,
    repair: Repair = True,
    speakers: Speakers = None,
    persons: Persons = None,
) -> State[dict[str, Any]]:
    """Transcribe one episode chunk by chunk, score it against ``reference`` and report;
    with ``speakers``, diarize it in a task of its own beside the chunks.

    Ends Completed with "WER 6.8% · 41 chunks · 2 flagged, 1 repaired" as its message, or
    Failed with the first podscribe error in one line.
    """
    started = time.perf_counter()
    settings = load_settings()
    record_flow_run(settings, episode_id)
    background = Background()
    try:
        options = TranscribeOptions(model=model, device=device, beam_size=beam_size, style=style)
        chunk_options = ChunkOptions(
            max_chunk_s=max_chunk_s,
            min_chunk_s=min(5.0, max_chunk_s),
            search_s=min(10.0, max_chunk_s),
        )
        # Not given (a scheduled poll's runs): the server's PODSCRIBE_SPEAKERS.
        speakers = settings.speakers if speakers is None else speakers
        diarizer = diarize_options(speakers, device)  # a bad value fails before any work
        people = tuple(parse_person(p) for p in persons or ())
        limits = fetch_limits(settings)
        ref = check_inputs(options, reference, settings, limits)
        manifest = prepare(
            source,
            episode_id,
            settings.audio_root,
            chunk_options.to_dict(),
            limits,
            settings.max_episode_s,
        )
        if settings.storage_url:  # the decoded WAV only when a diarize task needs it
            publish(
                manifest, settings.storage_url, title or manifest.episode_id, diarizer is not None
            )
        run = EpisodeRun(
            manifest,
            title or manifest.episode_id,
            options,
            RepairPolicy(enabled=repair),
            settings,
            background,
            started,
            feed,
            people,
        )
        diarizing = submit_diarization(manifest, diarizer, run.title, settings)
        new, statuses, errors = run_chunks(
            manifest, list(manifest.chunks), options, run.title, settings, background
        )
        summary = complete_episode(run, new, [], statuses, errors, ref, diarizing)
    except PodscribeError as exc:
        return _failed(settings, episode_id, exc)
    except Exception as exc:
        record_state(settings, episode_id, "failed", error=one_line(exc))
        raise
    finally:
        background.close()
    return _ended(settings, manifest.episode_id, summary)


def _rerun_run_name() -> str:
    p = flow_run.parameters
    numbers = ", ".join(str(n) for n in p.get("chunk_numbers") or [])
    try:
        settings = load_settings()
        title = find_episode(p["episode"], settings.transcripts_root, settings.db).title
    except PodscribeError:  # the flow body reports it; the name keeps what was typed
        title = p["episode"]
    return f"rerun chunks {numbers} of {title}"


@flow(
    name="rerun-chunks",
    flow_run_name=_rerun_run_name,
    task_runner=SettingsTaskRunner(),
)
def rerun_chunks(
    episode: EpisodeKey,
    chunk_numbers: ChunkNumbers,
    model: Model = "tiny.en",
    device: DeviceChoice = "auto",
    reference: RerunReference = None,
    repair: Repair = True,
) -> State[dict[str, Any]]:
    """Transcribe some chunks of a finished episode again (e.g. with another model) and
    rebuild its transcript, score and report from the new and the kept chunks."""
    started = time.perf_counter()
    settings = load_settings()
    episode_id: str | None = None
    background = Background()
    try:
        found = find_episode(episode, settings.transcripts_root, settings.db)
        episode_id = found.episode_id
        manifest = load_manifest(episode_dir(settings.audio_root, episode_id) / MANIFEST_NAME)
        out_dir = episode_dir(settings.transcripts_root, episode_id)
        old = load_transcript(out_dir / "transcript.json")
        wanted = chosen_chunks(manifest, chunk_numbers)
        cut = {c.index: c.sha256 for c in manifest.chunks}
        kept = [c for c in old.chunks if c.chunk_index not in wanted]
        if any(cut.get(c.chunk_index) != c.chunk_sha256 for c in kept):
            raise TranscriptionError(
                f"{out_dir}/transcript.json was made from another cut of "
                f"{episode_id}: transcribe the whole episode again"
            )
        # In the style the episode was transcribed in, so kept and new chunks read alike.
        # (A result from before styles were applied has none: it was written verbatim.)
        style = old.chunks[0].options.get("style", "verbatim") if old.chunks else "clean"
        options = TranscribeOptions(model=model, device=device, style=style)
        ref = check_inputs(
            options, reference or _scored_reference(out_dir), settings, fetch_limits(settings)
        )
        chunks = [c for c in manifest.chunks if c.index in wanted]
        if settings.storage_url:
            publish(manifest, settings.storage_url, found.title)
        policy = RepairPolicy(enabled=repair)
        run = EpisodeRun(manifest, found.title, options, policy, settings, background, started)
        new, statuses, errors = run_chunks(
            manifest, chunks, options, found.title, settings, background
        )
        summary = complete_episode(
            run, new, kept, statuses, errors, ref, _stored_diarization(out_dir)
        )
    except PodscribeError as exc:
        return _failed(settings, episode_id, exc)
    finally:
        background.close()
    return _ended(settings, episode_id, summary)


def chosen_chunks(manifest: ChunkManifest, numbers: list[int]) -> set[int]:
    """The 0-based indices of the chunks a user chose by number (from 1); OptionsError naming
    the valid range when a number is not a chunk of the episode."""
    total = len(manifest.chunks)
    wrong = sorted(n for n in set(numbers) if not 1 <= n <= total)
    if wrong or not numbers:
        raise OptionsError(
            f"chunk numbers {wrong or '[]'} are not chunks of {manifest.episode_id}: "
            f"it has chunks 1..{total} (the numbers in the task names 'chunk n/{total}')"
        )
    return {chunk_index_of(n) for n in numbers}


def _stored_diarization(out_dir: Path) -> Diarization | None:
    """The turns the episode was diarized into last time, so a rerun keeps its speakers."""
    path = out_dir / DIARIZATION_NAME
    if not path.exists():
        return None
    try:
        return diarization_from_dict(read_json(path))
    except (OSError, ValueError, KeyError):
        return None


def _scored_reference(out_dir: Path) -> str | None:
    """The reference the episode was last scored against, from its score.json."""
    try:
        return (read_json(out_dir / "score.json").get("reference") or {}).get("origin")
    except (OSError, ValueError):
        return None
