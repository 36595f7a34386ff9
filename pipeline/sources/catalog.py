"""The catalog of feeds and episodes, shared by the CLI, pollers and workers on every machine.

``db`` is a SQLite file path (the embedded default: one machine) or a ``postgresql://`` URL (one
catalog for several machines). Both speak the same SQLAlchemy Core statements; the few places
where the dialects differ (upserts, transaction start, insertion order) are chosen per backend.

Every call holds a transaction only for its few statements. SQLite runs in WAL mode, so several
processes (a poller, flow workers, the CLI) can use one file at once: readers never block the
writer, and a writer waits up to BUSY_TIMEOUT_S for another. On PostgreSQL each process keeps
a small connection pool; row locks (``FOR UPDATE``) and single-statement claims do the same job.

An episode's life: "new" → claimed by one poll ("running", one more attempt, a claim id) →
"done", or "failed" with its error and, while attempts are left under the RetryPolicy, the time
from which a poll may claim it again (exponential backoff). A failed episode with no attempt
left stays failed until ``retry_episode`` (``podscribe episodes retry``) makes it new again.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import NullPool

from pipeline.core.errors import FeedError, OptionsError
from pipeline.core.store import DEFAULT_TRANSCRIPTS_ROOT
from pipeline.core.types import Person
from pipeline.sources.feed import Feed, FeedEpisode, best_transcript

# Where a catalog lives: a SQLite file path, or a database URL (postgresql://user@host/db).
CatalogLocation = str | os.PathLike[str]

DEFAULT_DB = DEFAULT_TRANSCRIPTS_ROOT / "podscribe.db"
BUSY_TIMEOUT_S = 30.0  # seconds a SQLite write waits for another process's write to finish
STATES = ("new", "running", "done", "failed")
_SCHEMA_VERSION = 3
_MAX_EXPONENT = 32  # 2**32 × any sane base is past every cap: no float overflow
_PG_MIGRATION_LOCK = 0x70647363  # pg_advisory_xact_lock key: one process migrates at a time

# Times are ISO 8601 UTC text of one fixed format, compared as strings (next_attempt_at <= now).
# PostgreSQL compares text by the database's locale, which may weigh punctuation differently:
# byte order ("C") keeps string order equal to time order there too.
_Time = sa.Text().with_variant(sa.Text(collation="C"), "postgresql")

_metadata = sa.MetaData()
_feeds = sa.Table(
    "feeds",
    _metadata,
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("feed_id", sa.Text, nullable=False, unique=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("added_at", _Time, nullable=False),
    sa.Column("last_polled_at", _Time),
)
_episodes = sa.Table(
    "episodes",
    _metadata,
    sa.Column("episode_id", sa.Text, primary_key=True),
    sa.Column("feed_id", sa.Text, sa.ForeignKey("feeds.feed_id"), nullable=False),
    sa.Column("guid", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("audio_url", sa.Text, nullable=False),
    sa.Column("published", _Time),
    sa.Column("transcript_url", sa.Text),
    sa.Column("state", sa.Text, nullable=False, server_default="new"),
    sa.Column("last_wer", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", _Time, nullable=False),
    # Version 2: retries and stuck runs. Added to version-1 SQLite files in place (ALTER
    # TABLE), so an existing catalog keeps its rows.
    sa.Column("attempts", sa.Integer, nullable=False, server_default=sa.text("0")),
    sa.Column("next_attempt_at", _Time),
    sa.Column("claimed_at", _Time),
    sa.Column("claim_id", sa.Text),
    sa.Column("flow_run_id", sa.Text),
    # Version 3: the feed's <podcast:person> list, as JSON (NULL: none), so that an episode
    # started later from its row still names its speakers.
    sa.Column("persons", sa.Text),
    sa.UniqueConstraint("feed_id", "guid"),
    sa.CheckConstraint("state IN ('new', 'running', 'done', 'failed')", name="episode_state"),
)
sa.Index("episodes_by_state", _episodes.c.state)
_V2_COLUMNS = ("attempts", "next_attempt_at", "claimed_at", "claim_id", "flow_run_id")
_V3_COLUMNS = ("persons",)
# PostgreSQL only: the version of the schema in that database (SQLite keeps it in user_version).
_schema_info = sa.Table(
    "podscribe_schema", sa.MetaData(), sa.Column("version", sa.Integer, nullable=False)
)
# Insertion order, the tie-break of every listing: SQLite's rowid; on PostgreSQL an identity
# column the schema adds (rows have no stable physical order there).
_INSERTION_ORDER = {"sqlite": "rowid", "postgresql": "seq"}


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
    persons: tuple[Person, ...] = ()  # the feed's <podcast:person> list for this episode


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


# --- where the catalog is, and connections to it ---------------------------------------------


def describe(db: CatalogLocation) -> str:
    """The catalog as messages name it: its path, or its URL without the password."""
    url = _url(db)
    if url.get_backend_name() == "sqlite" and not _is_url(db):
        return str(db)
    return url.render_as_string(hide_password=True)


def _is_url(db: CatalogLocation) -> bool:
    return isinstance(db, str) and "://" in db


def _url(db: CatalogLocation) -> URL:
    if not _is_url(db):
        return URL.create("sqlite", database=os.fspath(db))
    try:
        url = make_url(str(db))
    except sa.exc.ArgumentError as exc:
        raise OptionsError(f"catalog URL {db!r} is not a database URL: {exc}") from exc
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        # psycopg 3 (the postgres extra), not SQLAlchemy's default psycopg2.
        driver = url.get_driver_name()
        return url.set(drivername=f"postgresql+{driver if '+' in url.drivername else 'psycopg'}")
    if backend != "sqlite":
        raise OptionsError(
            f"catalog {url.render_as_string(hide_password=True)}: use a SQLite file path or a "
            "postgresql:// URL"
        )
    return url


_engines: dict[str, Engine] = {}
_migrated: set[str] = set()
_engines_lock = threading.Lock()


def _engine(db: CatalogLocation) -> Engine:
    url = _url(db)
    key = url.render_as_string(hide_password=False)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is None:
            engine = _engines[key] = _create_engine(url)
        return engine


def _create_engine(url: URL) -> Engine:
    if url.get_backend_name() == "sqlite":
        # One connection per call, as sqlite3 itself would: nothing held open between calls.
        engine = sa.create_engine(url, poolclass=NullPool, connect_args={"timeout": BUSY_TIMEOUT_S})
        sa.event.listen(engine, "connect", _on_sqlite_connect)
        sa.event.listen(engine, "begin", _on_sqlite_begin)
        return engine
    try:
        return sa.create_engine(url, pool_size=2, max_overflow=8, pool_pre_ping=True)
    except ImportError as exc:
        raise OptionsError(
            f"catalog {url.render_as_string(hide_password=True)} needs psycopg: "
            "pip install 'podscribe[postgres]'"
        ) from exc


def _forget_engines() -> None:
    # A forked child must not use its parent's pooled sockets: it opens its own. The lock is
    # new too: another thread of the parent may have held it at the fork.
    global _engines_lock
    _engines_lock = threading.Lock()
    for engine in _engines.values():
        engine.dispose(close=False)
    _engines.clear()
    _migrated.clear()


os.register_at_fork(after_in_child=_forget_engines)


def close_catalog(db: CatalogLocation) -> None:
    """Close this process's pooled connections to ``db`` (the next call opens new ones)."""
    key = _url(db).render_as_string(hide_password=False)
    with _engines_lock:
        engine = _engines.pop(key, None)
        _migrated.discard(key)
    if engine is not None:
        engine.dispose()


def _on_sqlite_connect(dbapi_conn: sqlite3.Connection, _record: object) -> None:
    # Transactions are started by _on_sqlite_begin, not by sqlite3's own guesswork.
    dbapi_conn.isolation_level = None
    # WAL persists in the file; setting it on every open is cheap once it is set.
    dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA foreign_keys=ON")
    if _sqlite_version(dbapi_conn) < _SCHEMA_VERSION:
        _migrate_sqlite(dbapi_conn)


def _on_sqlite_begin(conn: Connection) -> None:
    # IMMEDIATE takes the write lock before the first read, so what a function reads cannot
    # change before it writes (another process's write waits for it).
    immediate = conn.get_execution_options().get("podscribe_immediate", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _sqlite_version(dbapi_conn: sqlite3.Connection) -> int:
    return int(dbapi_conn.execute("PRAGMA user_version").fetchone()[0])


def _migrate_sqlite(dbapi_conn: sqlite3.Connection) -> None:
    # One process migrates, under the write lock; another opening the file at the same moment
    # waits for it, then finds the new version and does nothing.
    dialect = sqlite.dialect()
    dbapi_conn.execute("BEGIN IMMEDIATE")
    try:
        version = _sqlite_version(dbapi_conn)
        _refuse_newer(version, "this SQLite file")
        if version < 1:
            for table in _metadata.sorted_tables:
                ddl = sa.schema.CreateTable(table, if_not_exists=True)
                dbapi_conn.execute(str(ddl.compile(dialect=dialect)))
                for index in table.indexes:
                    create = sa.schema.CreateIndex(index, if_not_exists=True)
                    dbapi_conn.execute(str(create.compile(dialect=dialect)))
        have = {row[1] for row in dbapi_conn.execute("PRAGMA table_info(episodes)")}
        for name in (*_V2_COLUMNS, *_V3_COLUMNS):
            if name not in have:
                column = sa.schema.CreateColumn(_episodes.c[name]).compile(dialect=dialect)
                dbapi_conn.execute(f"ALTER TABLE episodes ADD COLUMN {column}")
        dbapi_conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        dbapi_conn.execute("COMMIT")
    except BaseException:
        dbapi_conn.execute("ROLLBACK")
        raise


def _refuse_newer(version: int, where: str) -> None:
    if version > _SCHEMA_VERSION:
        raise FeedError(
            f"the catalog in {where} has schema version {version}, newer than this podscribe "
            f"knows ({_SCHEMA_VERSION}): upgrade podscribe"
        )


def _migrate_postgres(conn: Connection, where: str) -> None:
    # Every process checks once; the advisory lock makes racing first opens wait for one.
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
    _schema_info.create(conn, checkfirst=True)
    version = conn.execute(sa.select(sa.func.max(_schema_info.c.version))).scalar() or 0
    _refuse_newer(version, where)
    if version < 1:  # a new database: the current schema at once
        _metadata.create_all(conn, checkfirst=True)
        for table in ("feeds", "episodes"):
            conn.execute(
                sa.text(f"ALTER TABLE {table} ADD COLUMN seq BIGINT GENERATED ALWAYS AS IDENTITY")
            )
    if 1 <= version < 3:  # PostgreSQL catalogs began at version 2: only v3's column is new
        for name in _V3_COLUMNS:
            column = sa.schema.CreateColumn(_episodes.c[name]).compile(dialect=conn.dialect)
            conn.execute(sa.text(f"ALTER TABLE episodes ADD COLUMN IF NOT EXISTS {column}"))
    if version < _SCHEMA_VERSION:
        conn.execute(sa.delete(_schema_info))
        conn.execute(sa.insert(_schema_info).values(version=_SCHEMA_VERSION))


@contextlib.contextmanager
def _connect(db: CatalogLocation, writes: bool = False) -> Iterator[Connection]:
    """A connection for one short transaction: committed on success, rolled back on error.

    ``writes``: the transaction writes. On SQLite it then takes the write lock before its first
    read, so that what it reads cannot change before it writes (and a read snapshot is never
    refused its upgrade to a write); on PostgreSQL, functions lock the rows they read
    ``FOR UPDATE`` instead.
    """
    engine = _engine(db)
    if engine.dialect.name == "sqlite" and engine.url.database:
        Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
    conn = _open(engine, db)
    with conn:
        if engine.dialect.name == "postgresql":
            _ensure_postgres_schema(engine, conn, db)
        conn.execution_options(podscribe_immediate=writes)
        with conn.begin():
            yield conn


def _open(engine: Engine, db: CatalogLocation) -> Connection:
    try:
        return engine.connect()
    except sa.exc.OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        raise FeedError(
            f"cannot open the catalog {describe(db)}: {first} (check PODSCRIBE_DB or --db)"
        ) from exc


def _ensure_postgres_schema(engine: Engine, conn: Connection, db: CatalogLocation) -> None:
    key = engine.url.render_as_string(hide_password=False)
    if key in _migrated:
        return
    with conn.begin():
        _migrate_postgres(conn, describe(db))
    _migrated.add(key)


def catalog_exists(db: CatalogLocation) -> bool:
    """Whether ``db`` holds a catalog already (a file there; the tables in that database).

    Never creates one: commands that only read call this first.
    """
    if _url(db).get_backend_name() == "sqlite":
        database = _url(db).database
        return bool(database) and Path(database or "").is_file()
    engine = _engine(db)
    with _open(engine, db) as conn:
        return sa.inspect(conn).has_table("episodes")


def _insert(conn: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT (upserts) on both backends."""
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _order(conn: Connection) -> sa.ColumnElement[Any]:
    return sa.literal_column(_INSERTION_ORDER[conn.dialect.name])


# --- feeds -------------------------------------------------------------------------------------


def add_feed(db: CatalogLocation, feed: Feed) -> FeedRow:
    """Add a feed (or refresh its title if its URL is already there) and return its row.

    A feed keeps the feed_id it was first added with, so its folders and episode rows stay put
    when the publisher renames the show.
    """
    with _connect(db, writes=True) as conn:
        insert = _insert(conn, _feeds).values(
            url=feed.url, feed_id=feed.feed_id, title=feed.title, added_at=_now()
        )
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["url"], set_={"title": insert.excluded.title}
            )
        )
        return _feed_row(conn, feed.url)


_FEED_COLUMNS = [_feeds.c[f.name] for f in fields(FeedRow)]
_EPISODE_COLUMNS = [_episodes.c[f.name] for f in fields(EpisodeRow)]


def _to_episode_row(row: sa.Row[Any]) -> EpisodeRow:
    values = dict(row._mapping)
    values["persons"] = _persons_from_json(values.get("persons"))
    return EpisodeRow(**values)


def _persons_json(persons: Sequence[Person]) -> str | None:
    if not persons:
        return None
    return json.dumps(
        [{"name": p.name, "role": p.role, "group": p.group, "href": p.href} for p in persons]
    )


def _persons_from_json(text: str | None) -> tuple[Person, ...]:
    # Written by _persons_json only; a row another tool mangled names no one rather than
    # failing every listing.
    try:
        items = json.loads(text) if text else []
        return tuple(
            Person(str(i["name"]), str(i["role"]), str(i["group"]), i.get("href")) for i in items
        )
    except (ValueError, TypeError, KeyError):
        return ()


def _feed_row(conn: Connection, url: str) -> FeedRow:
    row = conn.execute(sa.select(*_FEED_COLUMNS).where(_feeds.c.url == url)).one()
    return FeedRow(**row._mapping)


def list_feeds(db: CatalogLocation) -> list[FeedRow]:
    """All feeds, in the order they were added."""
    with _connect(db) as conn:
        rows = conn.execute(
            sa.select(*_FEED_COLUMNS).order_by(_feeds.c.added_at, _order(conn))
        ).all()
    return [FeedRow(**row._mapping) for row in rows]


def record_feed_episodes(db: CatalogLocation, feed: Feed) -> list[FeedEpisode]:
    """Record a freshly read feed; return only its episodes never seen before (new GUIDs).

    New episodes are stored in state "new". Known ones keep their id and state, but gain a
    transcript link the feed did not have before (so they can be scored later). The feed is
    added if it is not in the catalog yet, and its last poll time is set. Safe against a
    concurrent poll: each new GUID is returned by exactly one caller.
    """
    add_feed(db, feed)
    now = _now()
    fresh: set[str] = set()
    with _connect(db, writes=True) as conn:
        feed_id = _feed_row(conn, feed.url).feed_id
        # Rows are written in one order by every poller, so that two of them inserting the
        # same episodes on PostgreSQL wait for each other instead of deadlocking.
        for episode in sorted(feed.episodes, key=lambda e: (e.guid, e.episode_id)):
            if _insert_episode(conn, feed_id, episode, now):
                fresh.add(episode.guid)
            else:
                _refresh(conn, feed_id, episode, "transcript_url", _transcript_url(episode), now)
                _refresh(conn, feed_id, episode, "persons", _persons_json(episode.persons), now)
        conn.execute(sa.update(_feeds).where(_feeds.c.url == feed.url).values(last_polled_at=now))
    return [episode for episode in feed.episodes if episode.guid in fresh]


def _transcript_url(episode: FeedEpisode) -> str | None:
    link = best_transcript(episode)
    return link.url if link else None


def _insert_episode(conn: Connection, feed_id: str, ep: FeedEpisode, now: str) -> bool:
    """Insert a new episode; False when its GUID (or its id) is already in the catalog."""
    insert = _insert(conn, _episodes).values(
        episode_id=ep.episode_id,
        feed_id=feed_id,
        guid=ep.guid,
        title=ep.title,
        audio_url=ep.audio_url,
        published=ep.published,
        transcript_url=_transcript_url(ep),
        persons=_persons_json(ep.persons),
        state="new",
        updated_at=now,
    )
    # RETURNING, not rowcount: drivers need not count the rows of an INSERT.
    inserted = conn.execute(insert.on_conflict_do_nothing().returning(_episodes.c.episode_id))
    return inserted.first() is not None


def _refresh(
    conn: Connection, feed_id: str, ep: FeedEpisode, column: str, value: Any, now: str
) -> None:
    """Set ``column`` of the episode's row to what the feed says now. A value that vanished
    from the feed (None) is kept: a transcript link may still be served, and a list of
    persons still names the voices."""
    if value is None:
        return
    col = _episodes.c[column]
    conn.execute(
        sa.update(_episodes)
        .where(
            _episodes.c.feed_id == feed_id, _episodes.c.guid == ep.guid, col.is_distinct_from(value)
        )
        .values({column: value, "updated_at": now})
    )


# --- episode states ----------------------------------------------------------------------------


def set_episode_state(
    db: CatalogLocation,
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
    with _connect(db, writes=True) as conn:
        row = _episode_row(conn, db, episode_id, lock=True)
        values: dict[str, Any] = {
            "state": state,
            "next_attempt_at": _next_attempt_at(row.attempts, retry, now)
            if state == "failed"
            else None,
            "updated_at": _iso(now),
        }
        if wer is not None:
            values["last_wer"] = wer
        if state == "done" or error is not None:
            values["last_error"] = error
        conn.execute(_update_episode(episode_id).values(**values))
        return _episode_row(conn, db, episode_id)


def _update_episode(episode_id: str) -> sa.Update:
    return sa.update(_episodes).where(_episodes.c.episode_id == episode_id)


def _next_attempt_at(attempts: int, retry: RetryPolicy | None, now: datetime | None) -> str | None:
    delay = (retry or RetryPolicy()).delay_s(attempts)
    if delay is None:
        return None
    return _iso((now or datetime.now(UTC)) + timedelta(seconds=delay))


def _claimable(stamp: str) -> sa.ColumnElement[bool]:
    """New, or failed with its next attempt due at ``stamp``."""
    return sa.or_(
        _episodes.c.state == "new",
        sa.and_(
            _episodes.c.state == "failed",
            _episodes.c.next_attempt_at.is_not(None),
            _episodes.c.next_attempt_at <= stamp,
        ),
    )


def claim_episode(
    db: CatalogLocation, episode_id: str, now: datetime | None = None
) -> EpisodeRow | None:
    """Move a new episode, or a failed one whose next attempt is due, to "running".

    Returns the claimed row (one more attempt, a fresh claim id), or None when the episode is
    not claimable now. The check and the update are one statement (on PostgreSQL a racing
    update waits for the row, then checks the condition again on what the winner wrote), so
    when several pollers race for the same episode exactly one of them gets the row.
    """
    stamp = _iso(now)
    with _connect(db, writes=True) as conn:
        claimed = conn.execute(
            _update_episode(episode_id)
            .where(_claimable(stamp))
            .values(
                state="running",
                attempts=_episodes.c.attempts + 1,
                claimed_at=stamp,
                claim_id=uuid.uuid4().hex,
                flow_run_id=None,
                next_attempt_at=None,
                updated_at=stamp,
            )
            .returning(*_EPISODE_COLUMNS)
        ).one_or_none()
    return _to_episode_row(claimed) if claimed is not None else None


def record_flow_run(db: CatalogLocation, episode_id: str, flow_run_id: str) -> bool:
    """Note the Prefect flow run transcribing a running episode; False if it is not running."""
    with _connect(db, writes=True) as conn:
        updated = conn.execute(
            _update_episode(episode_id)
            .where(_episodes.c.state == "running")
            .values(flow_run_id=flow_run_id)
        )
        return updated.rowcount == 1


def fail_running_episode(
    db: CatalogLocation,
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
    query = sa.select(_episodes.c.attempts).where(
        _episodes.c.episode_id == episode_id, _episodes.c.state == "running"
    )
    if claim_id is not None:
        query = query.where(_episodes.c.claim_id == claim_id)
    with _connect(db, writes=True) as conn:
        attempts = conn.execute(query.with_for_update()).scalar_one_or_none()
        if attempts is None:
            return None
        conn.execute(
            _update_episode(episode_id).values(
                state="failed",
                last_error=error,
                next_attempt_at=_next_attempt_at(attempts, retry, now),
                updated_at=_iso(now),
            )
        )
        return _episode_row(conn, db, episode_id)


def retry_episode(db: CatalogLocation, episode_id: str) -> EpisodeRow:
    """Make a failed episode new again, with all its attempts, so that the next poll takes it.

    The last error stays in view until a run replaces it. A running or done episode is refused:
    retrying the first would run it twice, and the second is already transcribed.
    """
    with _connect(db, writes=True) as conn:
        row = _episode_row(conn, db, episode_id, lock=True)
        if row.state in ("running", "done"):
            raise FeedError(_why_not_retried(db, row))
        conn.execute(
            _update_episode(episode_id)
            .where(_episodes.c.state.in_(("new", "failed")))
            .values(state="new", attempts=0, next_attempt_at=None, updated_at=_now())
        )
        return _episode_row(conn, db, episode_id)


def _why_not_retried(db: CatalogLocation, row: EpisodeRow) -> str:
    if row.state == "done":
        return (
            f"episode {row.episode_id!r} in {describe(db)} is done: transcribe it again with "
            f"`podscribe transcribe {row.audio_url} --episode-id {row.episode_id}`"
        )
    run = f"flow run {row.flow_run_id}" if row.flow_run_id else "a run with no flow run recorded"
    return (
        f"episode {row.episode_id!r} in {describe(db)} is running ({run}, claimed "
        f"{row.claimed_at}): cancel that run in Prefect, or wait; a poll recovers it once the "
        "run has ended or the running timeout has passed"
    )


def _unknown_episode(db: CatalogLocation, episode_id: str) -> FeedError:
    return FeedError(
        f"no episode {episode_id!r} in {describe(db)} (`podscribe episodes` lists them)"
    )


def _episode_row(
    conn: Connection, db: CatalogLocation, episode_id: str, lock: bool = False
) -> EpisodeRow:
    query = sa.select(*_EPISODE_COLUMNS).where(_episodes.c.episode_id == episode_id)
    # FOR UPDATE on PostgreSQL; SQLite has no row locks (its IMMEDIATE transaction holds the
    # whole file) and leaves the clause out.
    row = conn.execute(query.with_for_update() if lock else query).one_or_none()
    if row is None:
        raise _unknown_episode(db, episode_id)
    return _to_episode_row(row)


def get_episode(db: CatalogLocation, episode_id: str) -> EpisodeRow:
    """One episode's row; FeedError if the catalog does not have it."""
    with _connect(db) as conn:
        return _episode_row(conn, db, episode_id)


def _select_episodes(conn: Connection, *where: sa.ColumnElement[bool]) -> list[EpisodeRow]:
    # Oldest first: a backlog is transcribed in publication order.
    query = (
        sa.select(*_EPISODE_COLUMNS)
        .where(*where)
        .order_by(_episodes.c.published.is_(None), _episodes.c.published, _order(conn))
    )
    return [_to_episode_row(row) for row in conn.execute(query)]


def list_episodes(
    db: CatalogLocation, feed_id: str | None = None, state: str | None = None
) -> list[EpisodeRow]:
    """All episodes, or one feed's, or those in one state; oldest first."""
    if state is not None and state not in STATES:
        raise OptionsError(f"episode state {state!r} is not one of {', '.join(STATES)}")
    where = []
    if feed_id:
        where.append(_episodes.c.feed_id == feed_id)
    if state:
        where.append(_episodes.c.state == state)
    with _connect(db) as conn:
        return _select_episodes(conn, *where)


def due_episodes(
    db: CatalogLocation, feed_urls: Sequence[str] | None = None, now: datetime | None = None
) -> list[EpisodeRow]:
    """Episodes a poll should start now, oldest first: new ones, and failed ones whose next
    attempt is due; only those of ``feed_urls`` when given."""
    where = [_claimable(_iso(now))]
    if feed_urls is not None:
        of_feeds = sa.select(_feeds.c.feed_id).where(_feeds.c.url.in_(list(feed_urls)))
        where.append(_episodes.c.feed_id.in_(of_feeds))
    with _connect(db) as conn:
        return _select_episodes(conn, *where)


def running_for(row: EpisodeRow, now: datetime | None = None) -> float:
    """Seconds since a running episode was claimed (since its last update for rows claimed
    before claims were timed)."""
    since = datetime.fromisoformat(row.claimed_at or row.updated_at)
    return ((now or datetime.now(UTC)) - since).total_seconds()
