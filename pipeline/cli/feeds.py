"""CLI commands for feeds and episodes: ``feed add``, ``feed list``, ``episodes`` and
``episodes retry``.

``register(app)`` adds them to the main typer app; bad input raises PodscribeError subclasses,
which the main CLI prints as one line (exit status 2).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.core.errors import FeedError
from pipeline.core.types import to_dict
from pipeline.settings import fetch_limits, load_settings
from pipeline.sources import catalog
from pipeline.sources.feed import fetch_feed

out = Console()

DbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        help="The catalog of feeds and episodes: a SQLite file or a postgresql:// URL "
        "(default: $PODSCRIBE_DB, else transcripts/podscribe.db: the one `podscribe serve` uses).",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def register(app: typer.Typer) -> None:
    """Add ``feed add``, ``feed list``, ``episodes`` and ``episodes retry`` to ``app``."""
    feed_app = typer.Typer(
        help="Podcast feeds whose new episodes get transcribed.", no_args_is_help=True
    )
    feed_app.command("add")(feed_add)
    feed_app.command("list")(feed_list)
    app.add_typer(feed_app, name="feed")
    # `podscribe episodes [--state S]` lists; `podscribe episodes retry ID` retries one.
    episodes_app = typer.Typer(help="Episodes of the feeds: their state, WER and errors.")
    episodes_app.callback(invoke_without_command=True)(episodes)
    episodes_app.command("retry")(episodes_retry)
    app.add_typer(episodes_app, name="episodes")


def feed_add(
    url: Annotated[str, typer.Argument(help="The feed's URL (RSS or Atom), or a local file.")],
    db: DbOption = None,
    timeout_s: Annotated[
        float | None,
        typer.Option(
            help="Seconds of silence from the server (default: PODSCRIBE_READ_TIMEOUT_S)."
        ),
    ] = None,
) -> None:
    """Read a feed, add it to the catalog and record its episodes as new."""
    where = _catalog_path(db)
    limits = fetch_limits(load_settings(read_timeout_s=timeout_s))
    feed = fetch_feed(url, limits=limits)
    row = catalog.add_feed(where, feed)
    fresh = catalog.record_feed_episodes(where, feed)
    out.print(f"added {row.feed_id}: {row.title} ({len(feed.episodes)} episodes, {len(fresh)} new)")
    if feed.items_ignored:
        out.print(
            f"  read the first {limits.max_feed_items} items only, ignored {feed.items_ignored} "
            "(raise PODSCRIBE_MAX_FEED_ITEMS to read more)"
        )
    for title, why in feed.skipped:
        out.print(f"  skipped {title!r}: {why}")


def feed_list(db: DbOption = None, as_json: JsonOption = False) -> None:
    """List the feeds in the catalog."""
    where = _require_catalog(db)
    feeds = catalog.list_feeds(where)
    if as_json:
        print(json.dumps([to_dict(f) for f in feeds], indent=2))
        return
    table = Table("feed id", "title", "url", "last polled")
    for feed in feeds:
        table.add_row(feed.feed_id, feed.title, feed.url, feed.last_polled_at or "never")
    out.print(table)


def episodes(
    ctx: typer.Context,
    feed: Annotated[str | None, typer.Option("--feed", help="Only this feed id.")] = None,
    state: Annotated[
        str | None, typer.Option("--state", help="Only this state: new, running, done, failed.")
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List episodes with their state, last WER, attempts and last error."""
    if ctx.invoked_subcommand is not None:
        return
    where = _require_catalog(db)
    if feed is not None:
        _require_feed(where, feed)
    rows = catalog.list_episodes(where, feed_id=feed, state=state)
    if as_json:
        print(json.dumps([to_dict(r) for r in rows], indent=2))
        return
    table = Table("episode id", "title", "published", "state", "last WER", "attempts", "error")
    for row in rows:
        wer = "n/a" if row.last_wer is None else f"{row.last_wer:.2%}"
        table.add_row(
            row.episode_id,
            row.title,
            row.published or "",
            _state_words(row),
            wer,
            str(row.attempts),
            row.last_error or "",
        )
    out.print(table)


def _state_words(row: catalog.EpisodeRow) -> str:
    if row.state != "failed":
        return row.state
    if row.next_attempt_at is None:
        return "failed (no retry left)"
    return f"failed (retry from {row.next_attempt_at})"


def episodes_retry(
    episode_id: Annotated[str, typer.Argument(help="The failed episode's id.")],
    db: DbOption = None,
) -> None:
    """Make a failed episode new again, with all its attempts: the next poll transcribes it."""
    where = _require_catalog(db)
    before = catalog.get_episode(where, episode_id)
    row = catalog.retry_episode(where, episode_id)
    if before.state == "new":
        out.print(f"{row.episode_id} is already new: the next poll transcribes it")
        return
    out.print(
        f"{row.episode_id} was failed after {before.attempts} attempt(s) "
        f"({before.last_error or 'no error recorded'}); now new: the next poll "
        "(`podscribe serve` or a poll-feeds run) transcribes it again"
    )


def _catalog_path(db: str | None) -> Path | str:
    """--db, else the settings' catalog (PODSCRIBE_DB), as `podscribe serve` reads it."""
    return load_settings(db=db).db


def _require_catalog(db: str | None) -> Path | str:
    # Reading must not create an empty catalog where a mistyped --db points.
    where = _catalog_path(db)
    if not catalog.catalog_exists(where):
        raise FeedError(
            f"no catalog at {catalog.describe(where)}: add a feed first (`podscribe feed add URL`)"
        )
    return where


def _require_feed(db: Path | str, feed_id: str) -> None:
    known = [f.feed_id for f in catalog.list_feeds(db)]
    if feed_id not in known:
        raise FeedError(
            f"no feed {feed_id!r} in {catalog.describe(db)}; known feeds: "
            f"{', '.join(known) or 'none'}"
        )
