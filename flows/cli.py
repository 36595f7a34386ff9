"""The ``podscribe`` command: the library's commands (``pipeline.cli``) plus those that run
podscribe on Prefect: ``serve`` and ``demo``.

Prefect is imported inside the commands, so ``podscribe transcribe`` starts without it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.app import app, plain_demo
from pipeline.cli.app import main as run_app
from pipeline.cli.options import (
    AudioRootOption,
    ModelOption,
    StorageUrlOption,
    TranscriptsRootOption,
)
from pipeline.core.storage import Storage, check_storage
from pipeline.settings import ENV_PREFIX, Settings, load_settings

out = Console()
err = Console(stderr=True)


def _offline() -> None:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")


@app.command()
def serve(
    poll_every: Annotated[
        float, typer.Option(help="Minutes between scheduled feed polls (0: no interval schedule).")
    ] = 60.0,
    poll_cron: Annotated[
        str | None,
        typer.Option(
            help="Cron schedule for feed polls instead of the interval, e.g. '0 * * * *'."
        ),
    ] = None,
    feed: Annotated[
        list[str] | None,
        typer.Option("--feed", help="Feeds to poll (default: every feed in the catalog)."),
    ] = None,
    port: Annotated[int, typer.Option(help="Port of the local Prefect server.")] = 4200,
    limit: Annotated[
        int | None, typer.Option(help="Most flow runs at once in this process.")
    ] = None,
    storage_url: StorageUrlOption = None,
) -> None:
    """Serve the transcribe-episode, rerun-chunks, poll-feeds and backfill-feed deployments.

    Starts a local Prefect server (SQLite, analytics off) unless PREFECT_API_URL is set.
    Environment: PODSCRIBE_RESULTS_DIR (persisted chunk results, default ./results),
    PODSCRIBE_AUDIO_ROOT, PODSCRIBE_TRANSCRIPTS_ROOT, PODSCRIBE_DB, PODSCRIBE_TASK_RUNNER
    (threads|dask), PODSCRIBE_WORKERS, PODSCRIBE_DASK_ADDRESS, PODSCRIBE_DEVICE_SLOTS,
    PODSCRIBE_STORAGE_URL (--storage-url): read by each flow run as it starts
    (pipeline/settings.py).
    """
    settings = load_settings()  # a bad PODSCRIBE_* value fails here, not in the first flow run
    if storage_url:
        # The served flow runs read their settings from the environment as each starts.
        os.environ[f"{ENV_PREFIX}STORAGE_URL"] = storage_url
        settings = load_settings()
    if settings.storage_url:
        check_storage(Storage(settings.storage_url))
    _offline()
    from flows.deploy import serve_deployments
    from flows.server import local_server

    with local_server(port=port) as api_url:
        schedule = (
            f"cron {poll_cron}"
            if poll_cron
            else (f"every {poll_every:g} min" if poll_every else "on demand only")
        )
        out.print(serve_banner(api_url, schedule, load_settings()), highlight=False, soft_wrap=True)
        serve_deployments(poll_every or None, poll_cron, feed or None, limit)


@app.command()
def deploy(
    pool: Annotated[
        str, typer.Option(help="Work pool to send the deployments to (created if missing).")
    ] = "podscribe",
    poll_every: Annotated[
        float, typer.Option(help="Minutes between scheduled feed polls (0: no interval schedule).")
    ] = 60.0,
    poll_cron: Annotated[
        str | None, typer.Option(help="Cron schedule for feed polls instead of the interval.")
    ] = None,
    feed: Annotated[
        list[str] | None,
        typer.Option("--feed", help="Feeds to poll (default: every feed in the catalog)."),
    ] = None,
) -> None:
    """Send transcribe-episode, rerun-chunks and poll-feeds to a work pool on the Prefect
    server at PREFECT_API_URL; workers on any machine run them: `prefect worker start --pool
    POOL`. Each worker machine needs podscribe installed and the same PODSCRIBE_DB and
    PODSCRIBE_TRANSCRIPTS_ROOT / PODSCRIBE_RESULTS_DIR (shared storage); see README."""
    load_settings()
    _offline()
    if not os.environ.get("PREFECT_API_URL"):
        err.print(
            "podscribe deploy: set PREFECT_API_URL to the Prefect server the workers use, "
            "e.g. export PREFECT_API_URL=http://prefect.example.org:4200/api"
        )
        raise typer.Exit(2)
    from flows.deploy import deploy_to_pool

    ids = deploy_to_pool(pool, poll_every or None, poll_cron, feed or None)
    out.print(
        f"{len(ids)} deployments in work pool {pool!r}; start workers with: "
        f"prefect worker start --pool {pool}",
        highlight=False,
    )


def _absolute(db: Path | str) -> str:
    """The catalog as another shell's PODSCRIBE_DB: a path made absolute, a URL as it is."""
    return str(db.resolve()) if isinstance(db, Path) else db


def serve_banner(api_url: str, schedule: str, settings: Settings) -> str:
    """What `podscribe serve` says when it starts: where the UI is, what to export for the
    Prefect CLI (without PREFECT_API_URL it starts a temporary server of its own and shows
    nothing of ours), which catalog is used, and what Ctrl-C does."""
    from flows.server import ui_url

    return (
        f"Prefect UI: [bold]{ui_url(api_url)}[/bold]  (API {api_url})\n"
        f"serving transcribe-episode, rerun-chunks, poll-feeds ({schedule}), backfill-feed; "
        "at most "
        f"{settings.episode_runs} episode runs at once ({ENV_PREFIX}EPISODE_RUNS)\n"
        f"catalog {settings.db}, outputs {settings.transcripts_root}/ — for `podscribe feed`"
        f" and `podscribe episodes` in another shell, and for the Prefect CLI:\n"
        f"  export PREFECT_API_URL={api_url} {ENV_PREFIX}DB={_absolute(settings.db)}\n"
        "Ctrl-C stops serving; the deployments and their schedules stay as they are."
    )


def prefect_demo(settings: Settings, port: int = 4200) -> None:
    """Serve the demo feed on 127.0.0.1, poll it with Prefect, transcribe and score the new
    episodes in this process, and say where to look."""
    _offline()
    # The flows read their settings when each run starts: hand them this command's.
    for name in ("transcripts_root", "audio_root", "db", "model", "device"):
        os.environ[f"{ENV_PREFIX}{name.upper()}"] = str(getattr(settings, name))
    # The demo feed and its episodes are served on 127.0.0.1, a loopback address that
    # podscribe refuses to fetch from unless allowed.
    os.environ.setdefault("PODSCRIBE_ALLOW_PRIVATE_NETWORKS", "true")
    from flows.feeds import poll_feeds
    from flows.server import local_server, ui_url
    from pipeline.demo import serve_demo_feed
    from pipeline.sources import catalog

    with serve_demo_feed() as feed_url, local_server(port=port) as api_url:
        out.print(f"demo feed {feed_url}; Prefect API {api_url}")
        summary = poll_feeds(feeds=[feed_url], model=settings.model)
        feed_id = next(f.feed_id for f in catalog.list_feeds(settings.db) if f.url == feed_url)
        rows = catalog.list_episodes(settings.db, feed_id=feed_id)
        runs = _latest_runs([f"transcribe {row.title}" for row in rows])
    table = Table(title="podscribe demo (Prefect)")
    for col in ("episode", "state", "WER", "this run", "outputs"):
        table.add_column(col)
    for row in rows:
        wer = "n/a" if row.last_wer is None else f"{row.last_wer:.2%}"
        how = "transcribed" if row.episode_id in summary["started"] else "already done"
        table.add_row(
            row.title, row.state, wer, how, str(settings.transcripts_root / row.episode_id)
        )
    out.print(table)
    out.print(demo_epilogue(ui_url(api_url), rows, runs, settings), highlight=False)


def _latest_runs(names: list[str]) -> dict[str, str]:
    """The id of the latest flow run of each name (run name -> id)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        found = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=names)),
            sort=FlowRunSort.START_TIME_DESC,
        )
    latest: dict[str, str] = {}
    for run in found:
        latest.setdefault(run.name, str(run.id))
    return latest


def demo_epilogue(ui: str, rows: list, runs: dict[str, str], settings: Settings) -> str:
    """Where the demo's runs and reports are: in the UI (once a server runs on the same
    Prefect database: `podscribe serve`) and on disk."""
    from flows.report import quality_key

    lines = [
        "Where to look, in the Prefect UI (run `podscribe serve`, then open these):",
        f"  all runs: {ui}/runs — each run's state message holds its WER",
    ]
    for row in rows:
        run_id = runs.get(f"transcribe {row.title}")
        if run_id:
            lines.append(f"  {row.title}: {ui}/runs/flow-run/{run_id}")
    keys = ", ".join(quality_key(row.episode_id) for row in rows)
    lines += [
        f"  quality reports: {ui}/artifacts (keys {keys})",
        f"On disk: {settings.transcripts_root}/<episode id>/report.html (open in a browser), "
        "transcript .txt .srt .vtt .json, score.json",
    ]
    return "\n".join(lines)


@app.command()
def demo(
    model: ModelOption = None,
    transcripts_root: TranscriptsRootOption = None,
    audio_root: AudioRootOption = None,
    no_prefect: Annotated[
        bool,
        typer.Option(
            "--no-prefect", help="Transcribe the files directly, without a feed or Prefect."
        ),
    ] = False,
) -> None:
    """Poll a local feed of the bundled demo episodes with Prefect, transcribe and score the
    new ones, then say where the outputs and the UI are (``--no-prefect``: plain run)."""
    settings = load_settings(model=model, transcripts_root=transcripts_root, audio_root=audio_root)
    if no_prefect:
        plain_demo(settings.model, settings.transcripts_root, settings.audio_root)
    else:
        prefect_demo(settings)


def main() -> None:
    """Entry point of the installed ``podscribe`` command."""
    run_app(app)


if __name__ == "__main__":
    main()
