"""The local catalog of feeds and episodes: one SQLite file shared by the CLI, pollers and workers.

Every call opens its own connection and holds a transaction only for its few statements, and the
file is in WAL mode, so several processes (a poller, flow workers, the CLI) can use it at once:
readers never block the writer, and a writer waits up to BUSY_TIMEOUT_S for another.

An episode's life: "new" → claimed by one poll ("running", one more attempt, a claim id) →
"done", or "failed" with its error and, while attempts are left under the RetryPolicy, the time
from which a poll may claim it again (exponential backoff). A failed episode with no attempt
left stays failed until ``retry_episode`` (``podscribe episodes retry``) makes it new again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.core.errors import FeedError, OptionsError
from pipeline.core.store import DEFAULT_TRANSCRIPTS_ROOT
from pipeline.sources.feed import Feed, FeedEpisode, best_transcript

DEFAULT_DB = DEFAULT_TRANSCRIPTS_ROOT / "podscribe.db"
BUSY_TIMEOUT_S = 30.0  # seconds a write waits for another process's write to finish
STATES = ("new", "running", "done", "failed")
_SCHEMA_VERSION = 2
# Version 1: the tables as first released.
_SCHEMA_V1 = """
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
# Version 2: retries and stuck runs. Added to version-1 files in place (ALTER TABLE), so an
# existing catalog keeps its rows.
_COLUMNS_V2 = {
    "attempts": "INTEGER NOT NULL DEFAULT 0",
    "next_attempt_at": "TEXT",
    "claimed_at": "TEXT",
    "claim_id": "TEXT",
    "flow_run_id": "TEXT",
}
_EPISODE_COLUMNS = (
    "episode_id, feed_id, guid, title, audio_url, published, transcript_url, state, last_wer, "
    "last_error, updated_at, attempts, next_attempt_at, claimed_at, claim_id, flow_run_id"
)
_MAX_EXPONENT = 32  # 2**32 × any sane base is past every cap: no float overflow
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
    attempts: int = 0  # runs started since it was added or last retried by hand
    # A failed episode is claimed again by the first poll from then (ISO 8601, UTC); None when
    # it is not failed or has no attempt left.
    next_attempt_at: str | None = None
    claimed_at: str | None = None  # when the latest run was claimed (ISO 8601, UTC)
    claim_id: str | None = None  # unique per claim: the idempotency key of that claim's run
    flow_run_id: str | None = None  # the Prefect flow run of the latest claim, when known


@dataclass(frozen=True)
class RetryPolicy:
    """How often, and how soon, polls retry a failed episode."""

    max_attempts: int = 5  # runs in all, the first included; then the episode stays failed
    backoff_s: float = 600.0  # wait after the first failure; doubled after each further one
    backoff_max_s: float = 86400.0  # the longest wait between two attempts

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise OptionsError(f"retry max_attempts must be ≥ 1, not {self.max_attempts}")
        if not 0 <= self.backoff_s <= self.backoff_max_s:
            raise OptionsError(
                f"retry backoff must satisfy 0 ≤ backoff_s ({self.backoff_s}) ≤ "
                f"backoff_max_s ({self.backoff_max_s})"
            )

    def delay_s(self, attempts: int) -> float | None:
        """Seconds to wait after the ``attempts``-th run failed; None when none is left."""
        if attempts >= self.max_attempts:
            return None
        exponent = min(max(attempts - 1, 0), _MAX_EXPONENT)
        return min(self.backoff_s * 2**exponent, self.backoff_max_s)


def _iso(moment: datetime | None = None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds")


def _now() -> str:
    return _iso()


@contextlib.contextmanager
def _connect(db: Path, read_then_write: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection for one short transaction: committed on success, rolled back on error.

    ``read_then_write`` takes the write lock before the first read, so that what a function
    reads cannot change before it writes (another process's write waits for it).
    """
    db = Path(db)
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, timeout=BUSY_TIMEOUT_S)
    try:
        conn.row_factory = sqlite3.Row
        _ensure_schema(conn)
        with conn:
            if read_then_write:
                conn.execute("BEGIN IMMEDIATE")
            yield conn
    finally:
        conn.close()


def _ensure_schema(conn: sqlite3.Connection) -> None:
    # WAL persists in the file; setting it on every open is cheap once it is set.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    if _schema_version(conn) >= _SCHEMA_VERSION:
        return
    # One process migrates, under the write lock; another opening the file at the same moment
    # waits for it, then finds the new version and does nothing.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(conn)
        if version < 1:
            for statement in filter(str.strip, _SCHEMA_V1.split(";")):
                conn.execute(statement)
        if version < 2:
            have = {row[1] for row in conn.execute("PRAGMA table_info(episodes)")}
            for name, decl in _COLUMNS_V2.items():
                if name not in have:
                    conn.execute(f"ALTER TABLE episodes ADD COLUMN {name} {decl}")
        conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


def _schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


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
        "INSERT OR IGNORE INTO episodes (episode_id, feed_id, guid, title, audio_url, published, "
        "transcript_url, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, 'new', ?)",
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
    db: Path,
    episode_id: str,
    state: str,
    wer: float | None = None,
    error: str | None = None,
    retry: RetryPolicy | None = None,
    now: datetime | None = None,
) -> EpisodeRow:
    """Set an episode's state; record its WER and error when given, and return the new row.

    A None ``wer`` keeps the last WER (marking a re-run "running" must not hide the old score);
    state "done" clears the last error. State "failed" schedules the next attempt under
    ``retry`` (default: RetryPolicy()), or none when its attempts are used up.
    """
    if state not in STATES:
        raise OptionsError(f"episode state {state!r} is not one of {', '.join(STATES)}")
    with _connect(db, read_then_write=True) as conn:
        row = _episode_row(conn, db, episode_id)
        next_at = _next_attempt_at(row.attempts, retry, now) if state == "failed" else None
        conn.execute(
            "UPDATE episodes SET state = ?, last_wer = COALESCE(?, last_wer), "
            "last_error = CASE WHEN ? = 'done' THEN ? ELSE COALESCE(?, last_error) END, "
            "next_attempt_at = ?, updated_at = ? WHERE episode_id = ?",
            (state, wer, state, error, error, next_at, _iso(now), episode_id),
        )
        return _episode_row(conn, db, episode_id)


def _next_attempt_at(attempts: int, retry: RetryPolicy | None, now: datetime | None) -> str | None:
    delay = (retry or RetryPolicy()).delay_s(attempts)
    if delay is None:
        return None
    return _iso((now or datetime.now(UTC)) + timedelta(seconds=delay))


def claim_episode(db: Path, episode_id: str, now: datetime | None = None) -> EpisodeRow | None:
    """Move a new episode, or a failed one whose next attempt is due, to "running".

    Returns the claimed row (one more attempt, a fresh claim id), or None when the episode is
    not claimable now. The check and the update are one statement, so when several pollers
    race for the same episode exactly one of them gets the row and starts it.
    """
    stamp = _iso(now)
    with _connect(db) as conn:
        cursor = conn.execute(
            "UPDATE episodes SET state = 'running', attempts = attempts + 1, claimed_at = ?, "
            "claim_id = ?, flow_run_id = NULL, next_attempt_at = NULL, updated_at = ? "
            "WHERE episode_id = ? AND (state = 'new' OR "
            "(state = 'failed' AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?))",
            (stamp, uuid.uuid4().hex, stamp, episode_id, stamp),
        )
        return _episode_row(conn, db, episode_id) if cursor.rowcount == 1 else None


def record_flow_run(db: Path, episode_id: str, flow_run_id: str) -> bool:
    """Note the Prefect flow run transcribing a running episode; False if it is not running."""
    with _connect(db) as conn:
        cursor = conn.execute(
            "UPDATE episodes SET flow_run_id = ? WHERE episode_id = ? AND state = 'running'",
            (flow_run_id, episode_id),
        )
        return cursor.rowcount == 1


def fail_running_episode(
    db: Path,
    episode_id: str,
    error: str,
    retry: RetryPolicy | None = None,
    claim_id: str | None = None,
    now: datetime | None = None,
) -> EpisodeRow | None:
    """Mark a running episode failed (and schedule its retry) unless it has moved on.

    With ``claim_id``, only that claim's run is failed: an episode that finished, or was
    claimed again, meanwhile is left alone (None is returned).
    """
    with _connect(db, read_then_write=True) as conn:
        row = conn.execute(
            "SELECT attempts FROM episodes WHERE episode_id = ? AND state = 'running' "
            "AND (? IS NULL OR claim_id = ?)",
            (episode_id, claim_id, claim_id),
        ).fetchone()
        if row is None:
            return None
        conn.execute(
            "UPDATE episodes SET state = 'failed', last_error = ?, next_attempt_at = ?, "
            "updated_at = ? WHERE episode_id = ?",
            (error, _next_attempt_at(row[0], retry, now), _iso(now), episode_id),
        )
        return _episode_row(conn, db, episode_id)


def retry_episode(db: Path, episode_id: str) -> EpisodeRow:
    """Make a failed episode new again, with all its attempts, so that the next poll takes it.

    The last error stays in view until a run replaces it. A running or done episode is refused:
    retrying the first would run it twice, and the second is already transcribed.
    """
    with _connect(db, read_then_write=True) as conn:
        row = _episode_row(conn, db, episode_id)
        if row.state in ("running", "done"):
            raise FeedError(_why_not_retried(db, row))
        conn.execute(
            "UPDATE episodes SET state = 'new', attempts = 0, next_attempt_at = NULL, "
            "updated_at = ? WHERE episode_id = ? AND state IN ('new', 'failed')",
            (_now(), episode_id),
        )
        return _episode_row(conn, db, episode_id)


def _why_not_retried(db: Path, row: EpisodeRow) -> str:
    if row.state == "done":
        return (
            f"episode {row.episode_id!r} in {db} is done: transcribe it again with "
            f"`podscribe transcribe {row.audio_url} --episode-id {row.episode_id}`"
        )
    run = f"flow run {row.flow_run_id}" if row.flow_run_id else "a run with no flow run recorded"
    return (
        f"episode {row.episode_id!r} in {db} is running ({run}, claimed {row.claimed_at}): "
        "cancel that run in Prefect, or wait; a poll recovers it once the run has ended or "
        "the running timeout has passed"
    )


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


def list_episodes(
    db: Path, feed_id: str | None = None, state: str | None = None
) -> list[EpisodeRow]:
    """All episodes, or one feed's, or those in one state; oldest first."""
    if state is not None and state not in STATES:
        raise OptionsError(f"episode state {state!r} is not one of {', '.join(STATES)}")
    where = " AND ".join(
        clause for clause, arg in (("feed_id = ?", feed_id), ("state = ?", state)) if arg
    )
    args = tuple(arg for arg in (feed_id, state) if arg)
    with _connect(db) as conn:
        rows = conn.execute(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes {'WHERE ' + where if where else ''} "
            f"{_EPISODE_ORDER}",
            args,
        ).fetchall()
    return [EpisodeRow(**dict(row)) for row in rows]


def due_episodes(
    db: Path, feed_urls: Sequence[str] | None = None, now: datetime | None = None
) -> list[EpisodeRow]:
    """Episodes a poll should start now, oldest first: new ones, and failed ones whose next
    attempt is due; only those of ``feed_urls`` when given."""
    args: list[str] = [_iso(now)]
    where = ""
    if feed_urls is not None:
        where = f"AND feed_id IN (SELECT feed_id FROM feeds WHERE url IN ({_marks(feed_urls)}))"
        args += list(feed_urls)
    with _connect(db) as conn:
        rows = conn.execute(
            f"SELECT {_EPISODE_COLUMNS} FROM episodes WHERE (state = 'new' OR "
            f"(state = 'failed' AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?)) "
            f"{where} {_EPISODE_ORDER}",
            args,
        ).fetchall()
    return [EpisodeRow(**dict(row)) for row in rows]


def _marks(values: Sequence[str]) -> str:
    return ", ".join("?" * len(values)) or "NULL"


def running_for(row: EpisodeRow, now: datetime | None = None) -> float:
    """Seconds since a running episode was claimed (since its last update for rows claimed
    before claims were timed)."""
    since = datetime.fromisoformat(row.claimed_at or row.updated_at)
    return ((now or datetime.now(UTC)) - since).total_seconds()
