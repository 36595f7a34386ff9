"""Back-catalogue mode: a feed's queued episodes transcribed together, batches shared.

A poll starts every episode as its own run, and each run fills its own batches: a 5-minute
episode's 12 chunks make a batch of 8 and one of 4, then its remainder windows run in small
batches of their own. On a GPU a batch holds up to 64 windows, which one episode rarely fills.
A backfill claims up to N queued episodes of a feed from the catalog (exactly once, as a poll
does), prepares each (fetch, decode, cut), transcribes the chunks of all of them with one
batched decoder, so that windows of different episodes share batches, and finishes each one
(repair, merge, score, write, catalog state, history) as ``run_episode`` does.

A chunk's text depends only on its own windows (the batched decoder is batch-invariant; see
``pipeline.asr.batch``), so every episode gets the transcript it gets alone. One episode's
failure is its own: a download that fails marks that episode failed and the others go on; a
chunk that cannot be transcribed in the shared pass sends each episode through alone, so only
the episode it belongs to fails. Finished chunks are stored as they end (``ChunkResultStore``):
a backfill cut short loses none of them.

Each stage is a function of its own, so the Prefect flow (``flows.feeds.backfill``) runs the
same steps as tasks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.asr.options import LoadedModel, TranscribeOptions
from pipeline.audio.chunk import ChunkOptions
from pipeline.core.errors import PodscribeError
from pipeline.core.store import DEFAULT_AUDIO_ROOT, DEFAULT_TRANSCRIPTS_ROOT
from pipeline.core.types import Chunk, ChunkManifest, ChunkTranscript
from pipeline.episode import (
    EpisodeOutputs,
    EpisodeResult,
    check_options,
    prepare_episode,
    repair_and_finish,
    stored_transcripts,
)
from pipeline.quality.repair import RepairPolicy
from pipeline.sources import catalog
from pipeline.sources.feed import Feed
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import Reference, read_reference

if TYPE_CHECKING:
    from pipeline.asr.cache import ChunkResultStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackfillOptions:
    """How a backfill's episodes are cut, transcribed and repaired, and where they go."""

    transcribe: TranscribeOptions = field(default_factory=TranscribeOptions)
    chunk: ChunkOptions = field(default_factory=ChunkOptions)
    repair: RepairPolicy = field(default_factory=RepairPolicy)
    audio_root: Path = DEFAULT_AUDIO_ROOT
    transcripts_root: Path = DEFAULT_TRANSCRIPTS_ROOT
    fetch_limits: FetchLimits | None = None
    max_duration_s: float | None = None
    retry: catalog.RetryPolicy | None = None  # when a failed episode is claimed again
    chunk_store: Path | None = None  # default: <audio_root>/.chunk-results


@dataclass(frozen=True)
class PreparedEpisode:
    """A claimed episode, cut into chunks, with its reference when the feed links one."""

    row: catalog.EpisodeRow
    manifest: ChunkManifest
    reference: Reference | None
    prepare_s: float  # fetch, decode and cut


@dataclass(frozen=True)
class EpisodeOutcome:
    """What became of one claimed episode."""

    episode_id: str
    title: str
    state: str  # "done" or "failed", as the catalog now says
    error: str | None = None
    result: EpisodeResult | None = None  # when done


@dataclass(frozen=True)
class BackfillResult:
    """A backfill's outcome: each claimed episode's, and how fast the whole went."""

    feed_id: str
    outcomes: tuple[EpisodeOutcome, ...]
    audio_s: float  # seconds of audio transcribed (episodes that were prepared)
    chunks: int  # chunks of the prepared episodes (stored ones included)
    transcribe_s: float  # wall time of the shared transcription
    elapsed_s: float  # everything, from the feed read to the last episode's history line

    @property
    def done(self) -> list[EpisodeOutcome]:
        """The episodes that finished."""
        return [o for o in self.outcomes if o.state == "done"]

    @property
    def episodes_per_hour(self) -> float:
        """Finished episodes per hour of wall time."""
        return len(self.done) * 3600.0 / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _one_line(exc: BaseException) -> str:
    """An error as the catalog keeps it: its type and first line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


# --- stages ------------------------------------------------------------------------------------


def feed_url(db: catalog.CatalogLocation, given: str) -> str:
    """The feed a user means: a feed id in the catalog stands for its URL; anything else (a
    URL, a local file) is read as given."""
    if catalog.catalog_exists(db):
        for row in catalog.list_feeds(db):
            if given in (row.feed_id, row.url):
                return row.url
    return given


def claim_backlog(
    db: catalog.CatalogLocation, feed: Feed, limit: int | None = None, now: datetime | None = None
) -> list[catalog.EpisodeRow]:
    """Record the feed's episodes, then claim up to ``limit`` of its due ones (new, or failed
    with a retry due), oldest first. Each claim is the poll's ``claim_episode``: an episode a
    poll or another backfill holds is never claimed twice."""
    catalog.record_feed_episodes(db, feed)
    claimed: list[catalog.EpisodeRow] = []
    for due in catalog.due_episodes(db, [feed.url], now=now):
        if limit is not None and len(claimed) >= limit:
            break
        row = catalog.claim_episode(db, due.episode_id, now=now)
        if row is not None:  # None: claimed by someone else meanwhile
            claimed.append(row)
    return claimed


def prepare_claimed(row: catalog.EpisodeRow, options: BackfillOptions) -> PreparedEpisode:
    """Fetch, decode and cut a claimed episode; read its reference (one that cannot be read
    leaves the episode unscored, as in a poll's run). Raises the PodscribeError of a failed
    download or decode."""
    started = time.perf_counter()
    manifest = prepare_episode(
        row.audio_url,
        row.episode_id,
        options.audio_root,
        options.chunk,
        options.fetch_limits,
        options.max_duration_s,
    )
    reference = None
    if row.transcript_url:
        try:
            reference = read_reference(row.transcript_url, limits=options.fetch_limits)
        except PodscribeError as exc:
            log.warning("episode %s: reference unusable, not scoring: %s", row.episode_id, exc)
    return PreparedEpisode(row, manifest, reference, time.perf_counter() - started)


def transcribe_together(
    manifests: Sequence[ChunkManifest],
    options: TranscribeOptions,
    loaded: LoadedModel,
    store: ChunkResultStore,
    on_chunk: Callable[[ChunkTranscript], None] | None = None,
) -> list[list[ChunkTranscript]]:
    """Every episode's chunk transcripts, in episode order: the stored ones taken from
    ``store``, all the others transcribed in one pass (one batched decoder over the union of
    the episodes' chunks, so batches mix episodes), each stored as it ends."""
    from pipeline.asr.transcribe import transcribe_chunks  # torch

    reused = [stored_transcripts(m, store, options, loaded) for m in manifests]
    todo: list[Chunk] = []
    owners: list[int] = []  # the episode of each chunk in todo
    for n, (manifest, stored) in enumerate(zip(manifests, reused, strict=True)):
        done = {ct.chunk_index for ct in stored}
        fresh = [c for c in manifest.chunks if c.index not in done]
        todo.extend(fresh)
        owners.extend([n] * len(fresh))
    # on_done hears a transcript, not its chunk: the store key is what a transcript depends on
    # (sha256, index, place), so two chunks with one key are interchangeable here.
    by_key = {(c.index, c.sha256, c.start_s): c for c in todo}

    def finished(ct: ChunkTranscript) -> None:
        store.put(ct, by_key[(ct.chunk_index, ct.chunk_sha256, ct.start_s)], options, loaded)
        if on_chunk is not None:
            on_chunk(ct)

    fresh_results = transcribe_chunks(todo, options, on_done=finished, loaded=loaded)
    out = [list(stored) for stored in reused]
    for owner, ct in zip(owners, fresh_results, strict=True):
        out[owner].append(ct)
    return [sorted(cts, key=lambda ct: ct.chunk_index) for cts in out]


def transcribe_backlog(
    prepared: Sequence[PreparedEpisode],
    options: TranscribeOptions,
    loaded: LoadedModel,
    store: ChunkResultStore,
) -> dict[str, list[ChunkTranscript] | PodscribeError]:
    """Each episode's chunk transcripts, or the error that stopped them (by episode id).

    All episodes together first; if that fails (a chunk that cannot be read or decoded), each
    episode alone, its finished chunks taken from the store: the failure stays with the
    episode it belongs to.
    """
    manifests = [p.manifest for p in prepared]
    try:
        together = transcribe_together(manifests, options, loaded, store)
    except PodscribeError as exc:
        log.warning("shared transcription failed (%s): each episode alone now", exc)
    else:
        return {m.episode_id: cts for m, cts in zip(manifests, together, strict=True)}
    results: dict[str, list[ChunkTranscript] | PodscribeError] = {}
    for manifest in manifests:
        try:
            results[manifest.episode_id] = transcribe_together([manifest], options, loaded, store)[
                0
            ]
        except PodscribeError as exc:
            results[manifest.episode_id] = exc
    return results


def finish_claimed(
    prepared: PreparedEpisode,
    transcripts: Sequence[ChunkTranscript],
    options: BackfillOptions,
    loaded: LoadedModel,
    db: catalog.CatalogLocation,
    accounted_s: float = 0.0,
) -> EpisodeOutcome:
    """Repair, merge, score, write and record one episode (``repair_and_finish``, as
    ``run_episode`` ends), then mark it done in the catalog. ``accounted_s``: its share of the
    shared transcription, so its recorded time is its own work. A failure marks it failed."""
    row = prepared.row
    started = time.perf_counter() - prepared.prepare_s - accounted_s
    outputs = EpisodeOutputs(
        transcripts_root=Path(options.transcripts_root),
        reference=prepared.reference,
        feed=row.feed_id,
        title=row.title,
        persons=row.persons,
    )
    try:
        result = repair_and_finish(
            prepared.manifest,
            transcripts,
            outputs,
            options.transcribe,
            loaded,
            options.repair,
            started=started,
        )
    except PodscribeError as exc:
        return fail_claimed(db, row, _one_line(exc), options.retry)
    wer = result.score.wer if result.score else None
    catalog.set_episode_state(db, row.episode_id, "done", wer=wer, retry=options.retry)
    return EpisodeOutcome(row.episode_id, row.title, "done", result=result)


def fail_claimed(
    db: catalog.CatalogLocation,
    row: catalog.EpisodeRow,
    error: str,
    retry: catalog.RetryPolicy | None = None,
) -> EpisodeOutcome:
    """Mark a claimed episode failed (retried by a later poll or backfill under ``retry``)."""
    catalog.fail_running_episode(db, row.episode_id, error, retry, claim_id=row.claim_id)
    return EpisodeOutcome(row.episode_id, row.title, "failed", error=error)


def shares_of(
    transcripts: Mapping[str, Sequence[ChunkTranscript] | object], wall_s: float
) -> dict[str, float]:
    """Each transcribed episode's share of the shared transcription's wall time, in
    proportion to the time the decoder gave its chunks (a chunk's ``elapsed_s`` is its share
    of its batches). Entries that are not transcripts (errors) get none."""
    spent = {
        episode_id: sum(ct.elapsed_s for ct in cts)
        for episode_id, cts in transcripts.items()
        if isinstance(cts, list)
    }
    total = sum(spent.values())
    if total <= 0:
        return dict.fromkeys(spent, wall_s / max(len(spent), 1))
    return {episode_id: wall_s * s / total for episode_id, s in spent.items()}


# --- the whole -----------------------------------------------------------------------------------


def backfill_feed(
    feed: Feed,
    db: catalog.CatalogLocation,
    options: BackfillOptions | None = None,
    limit: int | None = None,
) -> BackfillResult:
    """Claim up to ``limit`` due episodes of ``feed``, prepare each, transcribe all their
    chunks together and finish each; every claimed episode ends done or failed.

    Whatever stops the backfill itself (an interrupt, a bug) fails the episodes it still holds,
    with that error, before it is raised: none is left "running".
    """
    from pipeline.asr.cache import STORE_DIRNAME, ChunkResultStore
    from pipeline.asr.loading import load_model

    started = time.perf_counter()
    options = options or BackfillOptions()
    check_options(options.transcribe)  # an unknown model fails before anything is claimed
    claimed = claim_backlog(db, feed, limit)
    outcomes: dict[str, EpisodeOutcome] = {}
    try:
        prepared: list[PreparedEpisode] = []
        for row in claimed:
            try:
                prepared.append(prepare_claimed(row, options))
            except PodscribeError as exc:
                outcomes[row.episode_id] = fail_claimed(db, row, _one_line(exc), options.retry)
        chunks = sum(len(p.manifest.chunks) for p in prepared)
        t0 = time.perf_counter()
        transcripts: dict[str, list[ChunkTranscript] | PodscribeError] = {}
        if prepared:  # nothing to load the model for otherwise
            loaded = load_model(options.transcribe)
            store_root = options.chunk_store or Path(options.audio_root) / STORE_DIRNAME
            store = ChunkResultStore(store_root)
            transcripts = transcribe_backlog(prepared, options.transcribe, loaded, store)
        transcribe_s = time.perf_counter() - t0
        shares = shares_of(transcripts, transcribe_s)
        for p in prepared:
            cts = transcripts[p.row.episode_id]
            if isinstance(cts, PodscribeError):
                outcomes[p.row.episode_id] = fail_claimed(db, p.row, _one_line(cts), options.retry)
                continue
            outcomes[p.row.episode_id] = finish_claimed(
                p, cts, options, loaded, db, shares[p.row.episode_id]
            )
    except BaseException as exc:
        for row in claimed:
            if row.episode_id not in outcomes:
                fail_claimed(db, row, f"backfill stopped: {_one_line(exc)}", options.retry)
        raise
    return BackfillResult(
        feed_id=feed.feed_id,
        outcomes=tuple(outcomes[row.episode_id] for row in claimed),
        audio_s=sum(p.manifest.audio.duration_s for p in prepared),
        chunks=chunks,
        transcribe_s=transcribe_s,
        elapsed_s=time.perf_counter() - started,
    )
