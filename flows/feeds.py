"""``poll_feeds``: read feeds, record their episodes, start each due episode exactly once;
``backfill``: a feed's due episodes transcribed together (back-catalogue mode).

Exactly once, three ways: the catalog returns each new GUID to one poll only, ``claim_episode``
moves an episode to "running" in one statement (one poll wins), and when deployed each claim's
run is created with the claim's id as idempotency key (a repeated call returns the first run).

Failed episodes are claimed again once their backoff has passed (catalog.RetryPolicy, from the
PODSCRIBE_RETRY_* settings). An episode left "running" by a run that died is recovered first:
failed, to be retried, when Prefect says its flow run has ended, or when it has run longer than
PODSCRIBE_RUNNING_TIMEOUT_S and its flow run is unknown to Prefect or was never recorded.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, cast
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun
from prefect.concurrency.sync import concurrency
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import deployment
from pydantic import Field

from flows.device import ensure_device_limit
from flows.episode import transcribe_episode
from flows.forms import DeviceChoice, Model, Repair, StyleChoice
from flows.settings import DEVICE_LIMIT, Settings, load_settings
from pipeline.asr.cache import STORE_DIRNAME, ChunkResultStore
from pipeline.asr.loading import load_model
from pipeline.asr.options import TranscribeOptions
from pipeline.backfill import (
    BackfillOptions,
    EpisodeOutcome,
    PreparedEpisode,
    claim_backlog,
    fail_claimed,
    feed_url,
    finish_claimed,
    prepare_claimed,
    shares_of,
    transcribe_backlog,
)
from pipeline.core.types import ChunkTranscript
from pipeline.episode import check_options
from pipeline.quality.repair import RepairPolicy
from pipeline.settings import fetch_limits, retry_policy, weights_source
from pipeline.sources import catalog
from pipeline.sources.feed import Feed, FeedEpisode, fetch_feed, format_person

TRANSCRIBE_DEPLOYMENT = "transcribe-episode/transcribe-episode"


@task(task_run_name="read feed {url}")
def read_feed(url: str) -> Feed:
    """Fetch and parse one feed (fetch_feed retries timeouts and 5xx itself)."""
    return fetch_feed(url, limits=fetch_limits(load_settings()))


@task(task_run_name="record episodes of {feed.feed_id}")
def record_episodes(db: Any, feed: Feed) -> list[FeedEpisode]:
    """Store the feed's episodes in the catalog; return the ones never seen before."""
    return catalog.record_feed_episodes(db, feed)


def _parameters(row: catalog.EpisodeRow, model: str, device: str, style: str) -> dict[str, Any]:
    return {
        "source": row.audio_url,
        "episode_id": row.episode_id,
        "title": row.title,
        "reference": row.transcript_url,
        "model": model,
        "device": device,
        "style": style,
        "feed": row.feed_id,
        # The feed's <podcast:person> list, to name the speakers when they are diarized.
        "persons": [format_person(p) for p in row.persons] or None,
    }


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:500]


def start_episode(
    row: catalog.EpisodeRow,
    model: str,
    device: str,
    settings: Settings,
    via_deployment: bool,
    style: str,
) -> str:
    """Start transcribe-episode for one claimed episode; returns how it went, in words.

    However the start fails, the episode is not left "running": it is failed, to be retried.
    """
    params = _parameters(row, model, device, style)
    if via_deployment:
        try:
            run = cast(
                FlowRun,
                run_deployment(
                    TRANSCRIBE_DEPLOYMENT,
                    parameters=params,
                    timeout=0,
                    idempotency_key=f"{row.episode_id}-{row.claim_id}",
                    # named now, not when it starts: queued runs read as episodes in the UI
                    flow_run_name=f"transcribe {row.title or row.episode_id}",
                ),
            )
        except ObjectNotFound:
            get_run_logger().warning(
                "no %s deployment: transcribing %s in this run",
                TRANSCRIBE_DEPLOYMENT,
                row.episode_id,
            )
        except Exception as exc:  # noqa: BLE001 - whatever it was, the episode must not hang
            error = f"could not start deployment {TRANSCRIBE_DEPLOYMENT}: {_one_line(exc)}"
            _fail(row, error, settings)
            return f"failed to start: {error}"
        else:
            catalog.record_flow_run(settings.db, row.episode_id, str(run.id))
            return f"deployment run {run.id}"
    state = transcribe_episode(**params, return_state=True)
    if not state.is_completed():
        # The flow marks its own failures; this catches a run that ended before it could.
        _fail(row, f"transcribe-episode ended {state.name}: {state.message or ''}", settings)
    return str(state.name)


def _fail(row: catalog.EpisodeRow, error: str, settings: Settings) -> None:
    catalog.fail_running_episode(
        settings.db, row.episode_id, error, retry_policy(settings), claim_id=row.claim_id
    )


def stuck_reason(row: catalog.EpisodeRow, timeout_s: float, now: datetime) -> str | None:
    """Why a running episode is stuck, or None while its run may still finish it."""
    age = catalog.running_for(row, now)
    if row.flow_run_id is None:
        if age <= timeout_s:
            return None
        return f"stuck: running for {age:.0f} s (> {timeout_s:.0f} s) with no flow run recorded"
    try:
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(UUID(row.flow_run_id))
    except ObjectNotFound:
        if age <= timeout_s:
            return None
        return (
            f"stuck: running for {age:.0f} s (> {timeout_s:.0f} s) and its flow run "
            f"{row.flow_run_id} is unknown to Prefect"
        )
    except Exception as exc:  # noqa: BLE001 - cannot tell: leave it for a later poll
        get_run_logger().warning(
            "episode %s: cannot read flow run %s: %s", row.episode_id, row.flow_run_id, exc
        )
        return None
    if run.state is not None and run.state.is_final():
        return f"stuck: its flow run {row.flow_run_id} ended {run.state.name} while it was running"
    return None


@task(task_run_name="recover stuck episodes")
def recover_stuck(settings: Settings) -> list[str]:
    """Fail (to be retried) every running episode whose run has died; return their ids."""
    log = get_run_logger()
    now = datetime.now(UTC)
    recovered = []
    for row in catalog.list_episodes(settings.db, state="running"):
        reason = stuck_reason(row, settings.running_timeout_s, now)
        if reason is None:
            continue
        # Guarded by the claim id: a run that finished meanwhile keeps its result.
        failed = catalog.fail_running_episode(
            settings.db, row.episode_id, reason, retry_policy(settings), claim_id=row.claim_id
        )
        if failed is not None:
            log.warning("episode %s recovered: %s", row.episode_id, reason)
            recovered.append(row.episode_id)
    return recovered


ViaDeployment = Annotated[
    bool | None,
    Field(
        title="Start episodes as deployment runs",
        description="Start each episode as a run of the transcribe-episode deployment (it "
        "then queues, at most PODSCRIBE_EPISODE_RUNS at once) rather than inside this run. "
        "Empty: when this poll itself runs from a deployment.",
    ),
]
FeedUrls = Annotated[
    list[str] | None,
    Field(
        title="Feed URLs",
        description="RSS/Atom feed URLs to read. Empty: every feed in the catalog "
        "(`podscribe feed add URL` adds one).",
    ),
]


@flow(name="poll-feeds", flow_run_name="poll feeds")
def poll_feeds(
    feeds: FeedUrls = None,
    model: Model = "tiny.en",
    device: DeviceChoice = "auto",
    via_deployment: ViaDeployment = None,
    style: StyleChoice = "clean",
) -> dict[str, list[str]]:
    """Read each feed (default: every feed in the catalog) and transcribe its due episodes:
    new ones, and failed ones whose retry is due. ``via_deployment``: start them as runs of
    the transcribe-episode deployment (default: when this poll itself runs from a deployment).

    A feed that fails is logged and the others still polled; an episode that fails is marked
    failed in the catalog (to be retried) and the others still started.
    """
    log = get_run_logger()
    settings = load_settings()
    db = settings.db
    if via_deployment is None:
        via_deployment = deployment.id is not None
    urls = feeds if feeds is not None else [f.url for f in catalog.list_feeds(db)]
    summary: dict[str, list[str]] = {"started": [], "skipped": [], "failed_feeds": []}
    polled: list[Feed] = []
    for url in urls:
        try:
            feed = read_feed(url)
        except Exception as exc:  # noqa: BLE001 - one bad feed must not stop the others
            log.error("feed %s failed: %s", url, exc)
            summary["failed_feeds"].append(url)
            continue
        record_episodes(db, feed)
        polled.append(feed)
    summary["recovered"] = recover_stuck(settings)
    for due in catalog.due_episodes(db, [f.url for f in polled]):
        row = catalog.claim_episode(db, due.episode_id)
        if row is None:  # another poll claimed it first
            continue
        how = start_episode(row, model, device, settings, via_deployment, style)
        log.info("episode %s (%s, attempt %d): %s", row.episode_id, row.title, row.attempts, how)
        summary["started"].append(row.episode_id)
    started = set(summary["started"])
    summary["skipped"] = [
        e.episode_id for f in polled for e in f.episodes if e.episode_id not in started
    ]
    return summary


# --- back-catalogue mode -------------------------------------------------------------------------


@task(task_run_name="prepare {row.title}", cache_policy=NO_CACHE)
def prepare_backlog_episode(row: catalog.EpisodeRow, options: BackfillOptions) -> PreparedEpisode:
    """Fetch, decode and cut one claimed episode; read its reference."""
    return prepare_claimed(row, options)


@task(task_run_name="transcribe {n} episodes together", cache_policy=NO_CACHE)
def transcribe_backlog_together(
    prepared: list[PreparedEpisode], options: BackfillOptions, n: int
) -> tuple[dict[str, list[ChunkTranscript] | str], float]:
    """All the episodes' chunks through one batched decoder (``transcribe_backlog``), holding
    every slot of the device limit: the shared batches fill the device. Returns each
    episode's chunk transcripts or its error line, and the wall time."""
    settings = load_settings()
    slots = ensure_device_limit(settings.device_slots)
    loaded = load_model(options.transcribe)
    store = ChunkResultStore(options.chunk_store or Path(options.audio_root) / STORE_DIRNAME)
    started = time.perf_counter()
    with concurrency(DEVICE_LIMIT, occupy=slots):
        results = transcribe_backlog(prepared, options.transcribe, loaded, store)
    return {
        episode_id: cts if isinstance(cts, list) else _one_line(cts)
        for episode_id, cts in results.items()
    }, time.perf_counter() - started


@task(task_run_name="finish {prepared.row.title}", cache_policy=NO_CACHE)
def finish_backlog_episode(
    prepared: PreparedEpisode,
    transcripts: list[ChunkTranscript],
    options: BackfillOptions,
    db: Any,
    share_s: float,
) -> EpisodeOutcome:
    """Repair, merge, score, write and record one episode; mark it done (or failed)."""
    return finish_claimed(
        prepared, transcripts, options, load_model(options.transcribe), db, share_s
    )


BackfillLimit = Annotated[
    int | None,
    Field(
        title="Most episodes",
        description="Claim at most this many due episodes (oldest first). Empty: all of them.",
        ge=1,
    ),
]
BatchSize = Annotated[
    int,
    Field(
        title="Batch size",
        description="Chunk windows decoded together, across episodes. 0: automatic (8 on a "
        "CPU, from free memory on a GPU).",
        ge=0,
    ),
]


@flow(name="backfill-feed", flow_run_name="backfill {feed}")
def backfill(
    feed: Annotated[str, Field(title="Feed", description="The feed's URL or its feed id.")],
    limit: BackfillLimit = None,
    model: Model = "tiny.en",
    device: DeviceChoice = "auto",
    batch_size: BatchSize = 0,
    repair: Repair = True,
    style: StyleChoice = "clean",
) -> dict[str, Any]:
    """Back-catalogue mode: claim a feed's due episodes (each exactly once, as a poll does),
    prepare each (a task each), transcribe all their chunks together in one task so batches
    mix episodes, and finish each (a task each). An episode that fails is marked failed and
    the others go on; the same steps as `podscribe backfill`."""
    settings = load_settings()
    db = settings.db
    options = BackfillOptions(
        transcribe=TranscribeOptions(
            model=model, device=device, batch_size=batch_size, style=style
        ),
        repair=RepairPolicy(enabled=repair),
        audio_root=settings.audio_root,
        transcripts_root=settings.transcripts_root,
        fetch_limits=fetch_limits(settings),
        max_duration_s=settings.max_episode_s,
        retry=retry_policy(settings),
    )
    check_options(options.transcribe, weights_source(settings))
    rows = claim_backlog(db, read_feed(feed_url(db, feed)), limit)
    outcomes: dict[str, EpisodeOutcome] = {}
    try:
        futures = [prepare_backlog_episode.submit(row, options) for row in rows]
        prepared = []
        for row, future in zip(rows, futures, strict=True):
            try:
                prepared.append(future.result())
            except Exception as exc:  # noqa: BLE001 - one episode's failure is its own
                outcomes[row.episode_id] = fail_claimed(db, row, _one_line(exc), options.retry)
        if prepared:
            transcripts, wall_s = transcribe_backlog_together(prepared, options, len(prepared))
            shares = shares_of(transcripts, wall_s)
            for p in prepared:
                cts = transcripts[p.row.episode_id]
                if isinstance(cts, str):
                    outcomes[p.row.episode_id] = fail_claimed(db, p.row, cts, options.retry)
                    continue
                outcomes[p.row.episode_id] = finish_backlog_episode(
                    p, cts, options, db, shares[p.row.episode_id]
                )
    except BaseException as exc:
        for row in rows:  # none is left "running"
            if row.episode_id not in outcomes:
                fail_claimed(db, row, f"backfill stopped: {_one_line(exc)}", options.retry)
        raise
    done = [o.episode_id for o in outcomes.values() if o.state == "done"]
    get_run_logger().info("backfill of %s: %d of %d episodes done", feed, len(done), len(rows))
    return {
        "done": done,
        "failed": {o.episode_id: o.error for o in outcomes.values() if o.state == "failed"},
    }
