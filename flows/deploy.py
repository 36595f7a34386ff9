"""The deployments `podscribe serve` (and docker-compose) serve, with poll-feeds' schedule, and
the same deployments sent to a work pool (`podscribe deploy --pool`), whose workers may run on
other machines."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast
from uuid import UUID

from prefect import deploy, serve
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.types.entrypoint import EntrypointType
from prefect.workers.process import ProcessWorker

from flows.device import ensure_device_limit
from flows.episode import rerun_chunks, transcribe_episode
from flows.feeds import backfill, poll_feeds
from flows.forms import with_form
from flows.settings import DIARIZE_LIMIT, load_settings

TRANSCRIBE_DESCRIPTION = """\
Transcribe one episode with Whisper and score it. The audio is fetched, decoded once and cut \
inside silences into chunks of at most 30 s (up to 90 s in a long episode); each chunk is one task \
("chunk 2/41 · title"). \
Writes `transcripts/EPISODE_ID/`: transcript .txt .srt .vtt .json, score.json and report.html; \
publishes the artifacts `quality-ID` (the report), `chunks-ID` (a row per chunk) and \
`progress-ID`. The run ends with "WER 6.8% · 41 chunks · 2 flagged, 1 repaired". \
Re-run part of it: Retry a failed run (finished chunks are kept), or run rerun-chunks with \
the chunk numbers the task names show."""

RERUN_DESCRIPTION = """\
Transcribe some chunks of an already transcribed episode again (e.g. with another model) and \
rebuild its transcript, score and report from the new and the kept chunks. Give the episode \
by title or id and the chunks by the numbers of their task names ("chunk 2/41" is 2). \
Replaces the files in `transcripts/EPISODE_ID/` and adds a version to its artifacts."""

POLL_DESCRIPTION = """\
Read podcast feeds, record their episodes in the catalog (PODSCRIBE_DB) and start one \
transcribe-episode run per new episode, named after its title; an episode is started once. \
At most PODSCRIBE_EPISODE_RUNS episode runs go at once; the others wait their turn. \
A failed feed or episode does not stop the others (`podscribe episodes` lists their states)."""

BACKFILL_DESCRIPTION = """\
Back-catalogue mode: claim up to LIMIT due episodes of one feed (each exactly once, as a poll \
does), fetch and cut each, then transcribe the chunks of all of them in one task, so that \
batches on the device mix episodes instead of each episode filling its own; then finish each \
episode as transcribe-episode does (files, history, catalog state). A failed episode is marked \
failed and the others go on."""


def build_deployments(
    poll_every_min: float | None = 60.0,
    poll_cron: str | None = None,
    feeds: list[str] | None = None,
    entrypoint_type: EntrypointType = EntrypointType.FILE_PATH,
) -> list[Any]:
    """transcribe-episode, rerun-chunks, poll-feeds (on an interval or a cron schedule;
    neither: only on demand) and backfill-feed, each with its run form and description; the
    episode deployments at most ``episode_runs`` runs at once. ``entrypoint_type``: how a
    process that runs them finds the flows (MODULE_PATH: by importing the installed package)."""
    settings = load_settings()
    schedule: dict[str, Any] = {}
    if poll_cron:
        schedule["cron"] = poll_cron
    elif poll_every_min:
        schedule["interval"] = timedelta(minutes=poll_every_min)
    limit = settings.episode_runs
    return [
        with_form(
            transcribe_episode.to_deployment(
                name="transcribe-episode",
                tags=["podscribe"],
                description=TRANSCRIBE_DESCRIPTION,
                concurrency_limit=limit,
                entrypoint_type=entrypoint_type,
            ),
            transcribe_episode,
        ),
        with_form(
            rerun_chunks.to_deployment(
                name="rerun-chunks",
                tags=["podscribe"],
                description=RERUN_DESCRIPTION,
                concurrency_limit=limit,
                entrypoint_type=entrypoint_type,
            ),
            rerun_chunks,
        ),
        with_form(
            poll_feeds.to_deployment(
                name="poll-feeds",
                tags=["podscribe"],
                description=POLL_DESCRIPTION,
                parameters={"feeds": feeds} if feeds else {},
                entrypoint_type=entrypoint_type,
                **schedule,
            ),
            poll_feeds,
        ),
        with_form(
            backfill.to_deployment(
                name="backfill-feed",
                tags=["podscribe"],
                description=BACKFILL_DESCRIPTION,
                concurrency_limit=1,  # one backfill fills the device already
                entrypoint_type=entrypoint_type,
            ),
            backfill,
        ),
    ]


def serve_deployments(
    poll_every_min: float | None = 60.0,
    poll_cron: str | None = None,
    feeds: list[str] | None = None,
    limit: int | None = None,
) -> None:
    """Create the device and diarize limits if missing, then serve the deployments until
    interrupted.

    On Ctrl-C the deployments stay as they are: Prefect's serve() pauses their schedules on
    exit by default, which would leave poll-feeds paused after a restart of `podscribe serve`
    (or of a second server process) until someone resumes it in the UI.
    """
    settings = load_settings()
    ensure_device_limit(settings.device_slots)
    ensure_device_limit(settings.diarize_slots, DIARIZE_LIMIT)
    serve(
        *build_deployments(poll_every_min, poll_cron, feeds),
        limit=limit,
        print_starting_message=False,
        pause_on_shutdown=False,
    )


def deploy_to_pool(
    pool: str,
    poll_every_min: float | None = 60.0,
    poll_cron: str | None = None,
    feeds: list[str] | None = None,
) -> list[str]:
    """Send the four deployments to work pool ``pool`` (created as a process pool when
    missing) and create the device and diarize limits if missing; returns the deployments' ids.

    Their entrypoints are module paths (``flows.episode.transcribe_episode``): a worker
    imports the flows from the podscribe installed on its own machine, in its own working
    directory, rather than from a folder that would have to exist at the same path on every
    machine. Workers then run them: ``prefect worker start --pool POOL``.
    """
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(
                WorkPoolCreate(name=pool, type="process", base_job_template=template)
            )
    settings = load_settings()
    ensure_device_limit(settings.device_slots)
    ensure_device_limit(settings.diarize_slots, DIARIZE_LIMIT)
    # deploy() returns a coroutine only when called from async code.
    ids = cast(
        list[UUID],
        deploy(
            *build_deployments(poll_every_min, poll_cron, feeds, EntrypointType.MODULE_PATH),
            work_pool_name=pool,
            build=False,
            push=False,
            print_next_steps_message=False,
            ignore_warnings=True,
        ),
    )
    return [str(i) for i in ids]
