"""The local catalog of feeds and episodes: one SQLite file shared by the CLI, pollers and workers.

Every call opens its own connection and holds a transaction only for its few statements, and the
file is in WAL mode, so several processes (a poller, flow workers, the CLI) can use it at once:
readers never block the writer, and a writer waits up to BUSY_TIMEOUT_S for another.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.core.errors import FeedError, OptionsError
from pipeline.core.store import DEFAULT_TRANSCRIPTS_ROOT
from pipeline.sources.feed import Feed, FeedEpisode, best_transcript

DEFAULT_DB = DEFAULT_TRANSCRIPTS_ROOT / "podscribe.db"
BUSY_TIMEOUT_S = 30.0  # seconds a write waits for another process's write to finish
STATES = ("new", "running", "done", "failed")
_SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS feeds (
    url TEXT PRIMARY KEY,
    feed_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    added_at TEXT NOT NULL,
    last_polled_at TEXT
);
CREATE TABLE IF NOT EXISTS episodes (
    episode_id TEXT PRIMARY KEY,
    feed_id TEXT NOT NULL REFERENCES feeds(feed_id),
    guid TEXT NOT NULL,
    title TEXT NOT NULL,
    audio_url TEXT NOT NULL,
    published TEXT,
    transcript_url TEXT,
    state TEXT NOT NULL DEFAULT 'new'
        CHECK (state IN ('new', 'running', 'done', 'failed')),
    last_wer REAL,
    last_error TEXT,
    updated_at TEXT NOT NULL,
    UNIQUE (feed_id, guid)
);
CREATE INDEX IF NOT EXISTS episodes_by_state ON episodes(state);
"""
_EPISODE_COLUMNS = (
    "episode_id, feed_id, guid, title, audio_url, published, transcript_url, state, last_wer, "
    "last_error, updated_at"
)
# Oldest first: a backlog is transcribed in publication order.
_EPISODE_ORDER = "ORDER BY published IS NULL, published, rowid"


@dataclass(frozen=True)
class FeedRow:
    """A feed the user added."""

    url: str
    feed_id: str
    title: str
    added_at: str  # ISO 8601, UTC
    last_polled_at: str | None  # ISO 8601, UTC; None until its episodes were first recorded


@dataclass(frozen=True)
class EpisodeRow:
    """An episode's catalog entry: where it came from and how far podscribe got with it."""

    episode_id: str
    feed_id: str
    guid: str
    title: str
    audio_url: str
    published: str | None
    transcript_url: str | None  # the best <podcast:transcript> link, when the feed has one
    state: str  # one of STATES
    last_wer: float | None  # WER of the latest scored run; None until one was scored
    last_error: str | None  # one line from the latest failure; cleared when a run succeeds
    updated_at: str  # ISO 8601, UTC


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@contextlib.contextmanager
def _connect(db: Path) -> Iterator[sqlite3.Connection]:
    """A connection for one short transaction: committed on success, rolled back on error."""
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S)
    try:
        conn.row_factory = sqlite3.Row
        _ensure_schema(conn)
        with conn:
            yield conn
    finally:
        conn.close()


def _ensure_schema(conn: sqlite3.Connection) -> None:
    # WAL persists in the file; setting it on every open is cheap once it is set.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if conn.execute("PRAGMA user_version").fetchone()[0] < _SCHEMA_VERSION:
        with conn:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")


def add_feed(db: Path, feed: Feed) -> FeedRow:
    """Add a feed (or refresh its title if its URL is already there) and return its row.

    A feed keeps the feed_id it was first added with, so its folders and episode rows stay put
    when the publisher renames the show.
    """
    with _connect(db) as conn:
        conn.execute(
            "INSERT INTO feeds (url, feed_id, title, added_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(url) DO UPDATE SET title = excluded.title",
            (feed.url, feed.feed_id, feed.title, _now()),
        )
        return _feed_row(conn, feed.url)


def _feed_row(conn: sqlite3.Connection, url: str) -> FeedRow:
    row = conn.execute("SELECT * FROM feeds WHERE url = ?", (url,)).fetchone()
    return FeedRow(**dict(row))


def list_feeds(db: Path) -> list[FeedRow]:
    """All feeds, in the order they were added."""
    with _connect(db) as conn:
        rows = conn.execute("SELECT * FROM feeds ORDER BY added_at, rowid").fetchall()
    return [FeedRow(**dict(row)) for row in rows]


def record_feed_episodes(db: Path, feed: Feed) -> list[FeedEpisode]:
    """Record a freshly read feed; return only its episodes never seen before (new GUIDs).

    New episodes are stored in state "new". Known ones keep their id and state, but gain a
    transcript link the feed did not have before (so they can be scored later). The feed is
    added if it is not in the catalog yet, and its last poll time is set. Safe against a
    concurrent poll: each new GUID is returned by exactly one caller.
    """
    add_feed(db, feed)
    now = _now()
    fresh: list[FeedEpisode] = []
    with _connect(db) as conn:
        feed_id = _feed_row(conn, feed.url).feed_id
        for episode in feed.episodes:
            if _insert_episode(conn, feed_id, episode, now):
                fresh.append(episode)
            else:
                _update_transcript_url(conn, feed_id, episode, now)
        conn.execute("UPDATE feeds SET last_polled_at = ? WHERE url = ?", (now, feed.url))
    return fresh


def _transcript_url(episode: FeedEpisode) -> str | None:
    link = best_transcript(episode)
    return link.url if link else None


def _insert_episode(conn: sqlite3.Connection, feed_id: str, ep: FeedEpisode, now: str) -> bool:
    """Insert a new episode; False when its GUID (or its id) is already in the catalog."""
    cursor = conn.execute(
        f"INSERT OR IGNORE INTO episodes ({_EPISODE_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, 'new', NULL, NULL, ?)",
        (
            ep.episode_id,
            feed_id,
            ep.guid,
            ep.title,
            ep.audio_url,
            ep.published,
            _transcript_url(ep),
            now,
        ),
    )
    return cursor.rowcount == 1


def _update_transcript_url(
    conn: sqlite3.Connection, feed_id: str, ep: FeedEpisode, now: str
) -> None:
    url = _transcript_url(ep)
    if url is None:  # a link that vanished from the feed is kept: it may still be served
        return
    conn.execute(
        "UPDATE episodes SET transcript_url = ?, updated_at = ? "
        "WHERE feed_id = ? AND guid = ? AND transcript_url IS NOT ?",
        (url, now, feed_id, ep.guid, url),
    )


def set_episode_state(
    db: Path, episode_id: str, state: str, wer: float | None = None, error: str | None = None
) -> EpisodeRow:
    """Set an episode's state; record its WER and error when given, and return the new row.

    A None ``wer`` keeps the last WER (marking a re-run "running" must not hide the old score);
    state "done" clears the last error.
    """
    if state not in STATES:
        raise OptionsError(f"episode state {state!r} is not one of {', '.join(STATES)}")
    with _connect(db) as conn:
        cursor = conn.execute(
            "UPDATE episodes SET state = ?, last_wer = COALESCE(?, last_wer), "
            "last_error = CASE WHEN ? = 'done' THEN ? ELSE COALESCE(?, last_error) END, "
            "updated_at = ? WHERE episode_id = ?",
            (state, wer, state, error, error, _now(), episode_id),
        )
        if cursor.rowcount == 0:
            raise _unknown_episode(db, episode_id)
        return _episode_row(conn, db, episode_id)


def claim_episode(db: Path, episode_id: str) -> bool:
    """Move a pending episode (new or failed) to "running"; False if it is not pending.

    The check and the update are one statement, so when several pollers race for the same
    episode exactly one of them gets True and starts it.
    """
    with _connect(db) as conn:
        cursor = conn.execute(
            "UPDATE episodes SET state = 'running', updated_at = ? "
            "WHERE episode_id = ? AND state IN ('new', 'failed')",
            (_now(), episode_id),
        )
        return cursor.rowcount == 1


def _unknown_episode(db: Path, episode_id: str) -> FeedError:
    return FeedError(f"no episode {episode_id!r} in {db} (`podscribe episodes` lists them)")


def _episode_row(conn: sqlite3.Connection, db: Path, episode_id: str) -> EpisodeRow:
    row = conn.execute(
        f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE episode_id = ?", (episode_id,)
    ).fetchone()
    if row is None:
        raise _unknown_episode(db, episode_id)
    return EpisodeRow(**dict(row))


def get_episode(db: Path, episode_id: str) -> EpisodeRow:
    """One episode's row; FeedError if the catalog does not have it."""
    with _connect(db) as conn:
        return _episode_row(conn, db, episode_id)


def list_episodes(db: Path, feed_id: str | None = None) -> list[EpisodeRow]:
    """All episodes, or one feed's, oldest first."""
    where, args = ("WHERE feed_id = ?", (feed_id,)) if feed_id else ("", ())
    with _connect(db) as conn:
        rows = conn.execute(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes {where} {_EPISODE_ORDER}", args
        ).fetchall()
    return [EpisodeRow(**dict(row)) for row in rows]


def pending_episodes(db: Path) -> list[EpisodeRow]:
    """Episodes a poll should (re)start: state new or failed, oldest first."""
    with _connect(db) as conn:
        rows = conn.execute(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE state IN ('new', 'failed') "
            f"{_EPISODE_ORDER}"
        ).fetchall()
    return [EpisodeRow(**dict(row)) for row in rows]
