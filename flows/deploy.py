"""The deployments `podscribe serve` (and docker-compose) serve, with poll-feeds' schedule."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from prefect import serve

from flows.device import ensure_device_limit
from flows.episode import rerun_chunks, transcribe_episode
from flows.feeds import poll_feeds
from flows.settings import load_settings


def build_deployments(
    poll_every_min: float | None = 60.0,
    poll_cron: str | None = None,
    feeds: list[str] | None = None,
) -> list[Any]:
    """transcribe-episode, rerun-chunks and poll-feeds (on an interval or a cron schedule;
    neither: only on demand)."""
    schedule: dict[str, Any] = {}
    if poll_cron:
        schedule["cron"] = poll_cron
    elif poll_every_min:
        schedule["interval"] = timedelta(minutes=poll_every_min)
    return [
        transcribe_episode.to_deployment(name="transcribe-episode", tags=["podscribe"]),
        rerun_chunks.to_deployment(name="rerun-chunks", tags=["podscribe"]),
        poll_feeds.to_deployment(
            name="poll-feeds",
            tags=["podscribe"],
            parameters={"feeds": feeds} if feeds else {},
            **schedule,
        ),
    ]


def serve_deployments(
    poll_every_min: float | None = 60.0,
    poll_cron: str | None = None,
    feeds: list[str] | None = None,
    limit: int | None = None,
) -> None:
    """Create the device limit if missing, then serve the deployments until interrupted."""
    ensure_device_limit(load_settings().device_slots)
    serve(
        *build_deployments(poll_every_min, poll_cron, feeds),
        limit=limit,
        print_starting_message=False,
    )
