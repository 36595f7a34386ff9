"""``poll_feeds``: read feeds, record their episodes, start each new episode exactly once.

Exactly once, three ways: the catalog returns each new GUID to one poll only, ``claim_episode``
moves an episode from "new" to "running" in one statement, and when deployed each episode's
run is created with the episode id as idempotency key (a repeated key returns the first run).
"""

from __future__ import annotations

from typing import Any, cast

from prefect import flow, get_run_logger, task
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import deployment

from flows.episode import transcribe_episode
from flows.settings import load_settings
from pipeline.settings import fetch_limits
from pipeline.sources import catalog
from pipeline.sources.feed import Feed, FeedEpisode, best_transcript, fetch_feed

TRANSCRIBE_DEPLOYMENT = "transcribe-episode/transcribe-episode"


@task(task_run_name="read feed {url}")
def read_feed(url: str) -> Feed:
    """Fetch and parse one feed (fetch_feed retries timeouts and 5xx itself)."""
    return fetch_feed(url, limits=fetch_limits(load_settings()))


@task(task_run_name="record episodes of {feed.feed_id}")
def record_episodes(db: Any, feed: Feed) -> list[FeedEpisode]:
    """Store the feed's episodes in the catalog; return the ones never seen before."""
    return catalog.record_feed_episodes(db, feed)


def _parameters(feed: Feed, episode: FeedEpisode, model: str, device: str) -> dict[str, Any]:
    link = best_transcript(episode)
    return {
        "source": episode.audio_url,
        "episode_id": episode.episode_id,
        "title": episode.title,
        "reference": link.url if link else None,
        "model": model,
        "device": device,
        "feed": feed.feed_id,
    }


def start_episode(feed: Feed, episode: FeedEpisode, model: str, device: str) -> str:
    """Start transcribe-episode for one claimed episode; returns how ("deployment"/state)."""
    params = _parameters(feed, episode, model, device)
    if deployment.id is not None:  # this poll runs from a deployment: so does transcription
        try:
            run = cast(
                FlowRun,
                run_deployment(
                    TRANSCRIBE_DEPLOYMENT,
                    parameters=params,
                    timeout=0,
                    idempotency_key=episode.episode_id,
                ),
            )
            return f"deployment run {run.id}"
        except ObjectNotFound:
            get_run_logger().warning(
                "no %s deployment: transcribing %s in this run",
                TRANSCRIBE_DEPLOYMENT,
                episode.episode_id,
            )
    state = transcribe_episode(**params, return_state=True)  # failures are marked in the catalog
    return str(state.name)


@flow(name="poll-feeds", flow_run_name="poll feeds")
def poll_feeds(
    feeds: list[str] | None = None, model: str = "tiny.en", device: str = "auto"
) -> dict[str, list[str]]:
    """Read each feed (default: every feed in the catalog) and transcribe its new episodes.

    A feed that fails is logged and the others still polled; an episode that fails is marked
    failed in the catalog and the others still started.
    """
    log = get_run_logger()
    db = load_settings().db
    urls = feeds if feeds is not None else [f.url for f in catalog.list_feeds(db)]
    summary: dict[str, list[str]] = {"started": [], "skipped": [], "failed_feeds": []}
    for url in urls:
        try:
            feed = read_feed(url)
        except Exception as exc:  # noqa: BLE001 - one bad feed must not stop the others
            log.error("feed %s failed: %s", url, exc)
            summary["failed_feeds"].append(url)
            continue
        record_episodes(db, feed)
        for episode in feed.episodes:
            row = catalog.get_episode(db, episode.episode_id)
            if row.state != "new" or not catalog.claim_episode(db, episode.episode_id):
                log.info("episode %s already %s: skipped", episode.episode_id, row.state)
                summary["skipped"].append(episode.episode_id)
                continue
            how = start_episode(feed, episode, model, device)
            log.info("episode %s (%s): %s", episode.episode_id, episode.title, how)
            summary["started"].append(episode.episode_id)
    return summary
