"""The catalog on both backends (a SQLite file, a PostgreSQL database): new episodes once,
states and WER, retries, several processes racing, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from conftest import LocalHTTPServer, Reply
from feedgen import Item, rss
from typer.testing import CliRunner

from pipeline.cli.feeds import register
from pipeline.core.errors import FeedError, OptionsError
from pipeline.core.types import Person
from pipeline.sources import catalog
from pipeline.sources.feed import Feed, parse_feed

ROOT = Path(__file__).resolve().parent.parent
FEED_URL = "http://example.org/feed.xml"


def _item(n: int, transcript: bool = False) -> Item:
    links = ((f"http://example.org/t/{n}.vtt", "text/vtt"),) if transcript else ()
    return Item(
        f"Episode {n}",
        f"guid-{n}",
        (f"http://example.org/{n}.mp3", "audio/mpeg"),
        transcripts=links,
        published=f"Mon, 0{n} Jun 2025 10:00:00 GMT",
    )


def _feed(*numbers: int, transcripts: bool = False) -> Feed:
    return parse_feed(rss("Show", [_item(n, transcripts) for n in numbers]), FEED_URL)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """The catalog each test runs on: a SQLite file path, then a PostgreSQL database URL."""
    if request.param == "sqlite":
        yield tmp_path / "transcripts" / "podscribe.db"
        return
    url = request.getfixturevalue("postgres_url")
    yield url
    catalog.close_catalog(url)


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Path:
    """A SQLite catalog path, for what only SQLite files have (old versions, PRAGMAs)."""
    return tmp_path / "transcripts" / "podscribe.db"


def test_new_episodes_are_returned_once(db: Path | str) -> None:
    first = catalog.record_feed_episodes(db, _feed(1, 2))
    assert [e.guid for e in first] == ["guid-1", "guid-2"]
    assert catalog.record_feed_episodes(db, _feed(1, 2)) == []
    # An item added between two polls is the only one the second poll returns.
    assert [e.guid for e in catalog.record_feed_episodes(db, _feed(1, 2, 3))] == ["guid-3"]
    rows = catalog.list_episodes(db)
    assert [(r.guid, r.state) for r in rows] == [
        ("guid-1", "new"),
        ("guid-2", "new"),
        ("guid-3", "new"),
    ]
    [feed] = catalog.list_feeds(db)
    assert (feed.url, feed.title, feed.feed_id) == (FEED_URL, "Show", _feed(1).feed_id)
    assert feed.last_polled_at is not None


def test_feed_keeps_its_id_when_renamed(db: Path | str) -> None:
    catalog.add_feed(db, _feed(1))
    renamed = parse_feed(rss("New Name", [_item(1), _item(2)]), FEED_URL)
    assert renamed.feed_id != _feed(1).feed_id
    assert [e.guid for e in catalog.record_feed_episodes(db, renamed)] == ["guid-1", "guid-2"]
    [feed] = catalog.list_feeds(db)
    assert (feed.feed_id, feed.title) == (_feed(1).feed_id, "New Name")
    assert {r.feed_id for r in catalog.list_episodes(db)} == {feed.feed_id}


def test_states_and_wer(db: Path | str) -> None:
    [one, two] = catalog.record_feed_episodes(db, _feed(1, 2))
    assert catalog.set_episode_state(db, one.episode_id, "running").state == "running"
    done = catalog.set_episode_state(db, one.episode_id, "done", wer=0.125)
    assert (done.state, done.last_wer, done.last_error) == ("done", 0.125, None)
    # A re-run keeps the old WER in view until it has a new one.
    assert catalog.set_episode_state(db, one.episode_id, "running").last_wer == 0.125
    failed = catalog.set_episode_state(db, two.episode_id, "failed", error="chunk 3: boom")
    assert (failed.state, failed.last_error) == ("failed", "chunk 3: boom")
    later = datetime.now(UTC) + timedelta(hours=1)  # past the default 10 min backoff
    assert [r.episode_id for r in catalog.due_episodes(db, now=later)] == [two.episode_id]
    redone = catalog.set_episode_state(db, two.episode_id, "done", wer=0.5)
    assert (redone.last_wer, redone.last_error, redone.next_attempt_at) == (0.5, None, None)
    assert catalog.get_episode(db, two.episode_id) == redone
    assert catalog.due_episodes(db, now=later) == []


def test_rows_are_frozen_dataclasses(db: Path | str) -> None:
    catalog.record_feed_episodes(db, _feed(1))
    row = catalog.list_episodes(db)[0]
    assert dataclasses.is_dataclass(row)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.state = "done"  # type: ignore[misc]


def test_claim_episode_once(db: Path | str) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    first = catalog.claim_episode(db, one.episode_id)
    assert first is not None and (first.state, first.attempts) == ("running", 1)
    assert catalog.claim_episode(db, one.episode_id) is None
    catalog.set_episode_state(db, one.episode_id, "failed", error="x")
    assert catalog.claim_episode(db, one.episode_id) is None  # not before its backoff
    later = datetime.now(UTC) + timedelta(hours=1)
    second = catalog.claim_episode(db, one.episode_id, now=later)
    assert second is not None and second.attempts == 2 and second.claim_id != first.claim_id


def test_transcript_link_arriving_later_is_recorded(db: Path | str) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    assert catalog.get_episode(db, one.episode_id).transcript_url is None
    catalog.set_episode_state(db, one.episode_id, "done")
    assert catalog.record_feed_episodes(db, _feed(1, transcripts=True)) == []
    row = catalog.get_episode(db, one.episode_id)
    assert (row.transcript_url, row.state) == ("http://example.org/t/1.vtt", "done")


def test_bad_state_and_unknown_episode(db: Path | str) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    with pytest.raises(OptionsError, match="episode state 'finished' is not one of new, running"):
        catalog.set_episode_state(db, one.episode_id, "finished")
    with pytest.raises(FeedError, match=f"no episode 'nope' in {re.escape(catalog.describe(db))}"):
        catalog.set_episode_state(db, "nope", "done")
    with pytest.raises(FeedError, match="no episode 'nope'"):
        catalog.get_episode(db, "nope")
    assert catalog.get_episode(db, one.episode_id).state == "new"  # nothing lost


def _in_subprocess(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
        timeout=60,
    )
    return done.stdout.strip()


def test_another_process_sees_updates(db: Path | str) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    catalog.set_episode_state(db, one.episode_id, "done", wer=0.25)
    seen = _in_subprocess(
        f"from pipeline.sources import catalog; r = catalog.get_episode({str(db)!r}, "
        f"{one.episode_id!r}); print(r.state, r.last_wer); "
        f"catalog.set_episode_state({str(db)!r}, {one.episode_id!r}, 'failed', error='gpu')"
    )
    assert seen == "done 0.25"
    row = catalog.get_episode(db, one.episode_id)
    assert (row.state, row.last_error, row.last_wer) == ("failed", "gpu", 0.25)


def test_concurrent_polls_record_each_episode_once(db: Path | str, tmp_path: Path) -> None:
    feed_file = tmp_path / "feed.xml"
    feed_file.write_bytes(rss("Show", [_item(n) for n in range(1, 9)]))
    code = (
        "from pipeline.sources import catalog, feed; "
        f"f = feed.fetch_feed({str(feed_file)!r}); "
        f"print(' '.join(e.guid for e in catalog.record_feed_episodes({str(db)!r}, f)))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [p.communicate(timeout=60)[0].split() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    returned = [guid for out in outputs for guid in out]
    assert sorted(returned) == sorted(f"guid-{n}" for n in range(1, 9))  # each exactly once


# --- CLI -------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_feed_add_list_and_episodes(
    cli: typer.Typer, db: Path | str, http_server: LocalHTTPServer
) -> None:
    items = [_item(1), _item(2), Item("PDF", "g-pdf", ("http://x/n.pdf", "application/pdf"))]
    url = http_server.route("/feed.xml", Reply(rss("CLI Show", items)))
    runner = CliRunner()

    added = runner.invoke(cli, ["feed", "add", url, "--db", str(db)])
    assert added.exit_code == 0, added.output
    assert "(2 episodes, 2 new)" in added.output
    assert "skipped 'PDF': enclosure is not audio (application/pdf)" in added.output

    feeds = json.loads(runner.invoke(cli, ["feed", "list", "--db", str(db), "--json"]).output)
    assert [(f["url"], f["title"]) for f in feeds] == [(url, "CLI Show")]
    feed_id = feeds[0]["feed_id"]

    [one, _] = catalog.list_episodes(db)
    catalog.set_episode_state(db, one.episode_id, "done", wer=0.1)
    listed = runner.invoke(cli, ["episodes", "--feed", feed_id, "--db", str(db), "--json"])
    rows = json.loads(listed.output)
    assert [(r["title"], r["state"], r["last_wer"]) for r in rows] == [
        ("Episode 1", "done", 0.1),
        ("Episode 2", "new", None),
    ]

    table = runner.invoke(cli, ["episodes", "--db", str(db)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "10.00%" in table.output and "new" in table.output


def test_cli_bad_input(cli: typer.Typer, db: Path | str, http_server: LocalHTTPServer) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["episodes", "--db", str(db)])
    assert isinstance(missing.exception, FeedError)
    assert str(missing.exception).startswith(f"no catalog at {catalog.describe(db)}")
    assert not catalog.catalog_exists(db)  # listing never creates a catalog

    catalog.record_feed_episodes(db, _feed(1))
    unknown = runner.invoke(cli, ["episodes", "--feed", "nope", "--db", str(db)])
    assert isinstance(unknown.exception, FeedError)
    assert f"known feeds: {_feed(1).feed_id}" in str(unknown.exception)

    page = http_server.route(
        "/page", Reply(b"<html><body>hi</body></html>", content_type="text/html")
    )
    bad = runner.invoke(cli, ["feed", "add", page, "--db", str(db)])
    assert isinstance(bad.exception, FeedError) and "is not an RSS or Atom feed" in str(
        bad.exception
    )
    assert len(catalog.list_feeds(db)) == 1 and len(catalog.list_episodes(db)) == 1  # kept


# --- retries of failed episodes ----------------------------------------------------------------

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "delay_s"),
    [(0, 600.0), (1, 600.0), (2, 1200.0), (3, 2400.0), (4, None), (5, None)],
)
def test_backoff_doubles_until_no_attempt_is_left(attempts: int, delay_s: float | None) -> None:
    assert catalog.RetryPolicy(max_attempts=4, backoff_s=600).delay_s(attempts) == delay_s


def test_backoff_is_capped_and_bad_policies_refused() -> None:
    policy = catalog.RetryPolicy(max_attempts=1000, backoff_s=600, backoff_max_s=3600)
    assert [policy.delay_s(n) for n in (1, 2, 3, 4, 999)] == [600, 1200, 2400, 3600, 3600]
    with pytest.raises(OptionsError, match="max_attempts must be ≥ 1, not 0"):
        catalog.RetryPolicy(max_attempts=0)
    with pytest.raises(OptionsError, match="0 ≤ backoff_s"):
        catalog.RetryPolicy(backoff_s=100, backoff_max_s=10)


def test_failed_episode_is_retried_with_backoff_then_stays_failed(db: Path | str) -> None:
    policy = catalog.RetryPolicy(max_attempts=3, backoff_s=60)
    [one, two] = catalog.record_feed_episodes(db, _feed(1, 2))
    now = T0
    for attempt, wait_s in [(1, 60), (2, 120)]:
        row = catalog.claim_episode(db, one.episode_id, now=now)
        assert row is not None and row.attempts == attempt
        failed = catalog.fail_running_episode(
            db, one.episode_id, f"boom {attempt}", policy, now=now
        )
        assert failed is not None and failed.state == "failed"
        due_at = now + timedelta(seconds=wait_s)
        assert failed.next_attempt_at == due_at.isoformat()
        early = due_at - timedelta(seconds=1)
        assert one.episode_id not in [r.episode_id for r in catalog.due_episodes(db, now=early)]
        assert catalog.claim_episode(db, one.episode_id, now=early) is None
        assert one.episode_id in [r.episode_id for r in catalog.due_episodes(db, now=due_at)]
        now = due_at
    assert catalog.claim_episode(db, one.episode_id, now=now) is not None  # attempt 3, the last
    catalog.set_episode_state(db, one.episode_id, "failed", error="boom 3", retry=policy, now=now)
    final = catalog.get_episode(db, one.episode_id)
    assert (final.state, final.attempts, final.last_error, final.next_attempt_at) == (
        "failed",
        3,
        "boom 3",
        None,
    )
    far = now + timedelta(days=365)
    assert [r.episode_id for r in catalog.due_episodes(db, now=far)] == [two.episode_id]
    assert catalog.claim_episode(db, one.episode_id, now=far) is None
    assert [r.episode_id for r in catalog.list_episodes(db, state="failed")] == [one.episode_id]

    # Retried by hand: new again with all its attempts, the last error still in view.
    again = catalog.retry_episode(db, one.episode_id)
    assert (again.state, again.attempts, again.last_error) == ("new", 0, "boom 3")
    claimed = catalog.claim_episode(db, one.episode_id, now=far)
    assert claimed is not None and claimed.attempts == 1
    assert catalog.set_episode_state(db, one.episode_id, "done", wer=0.2).last_error is None


def test_retry_refuses_running_and_done_episodes(db: Path | str) -> None:
    [one, two] = catalog.record_feed_episodes(db, _feed(1, 2))
    catalog.claim_episode(db, one.episode_id)
    catalog.record_flow_run(db, one.episode_id, "0b7e5c1e-0000-4000-8000-000000000001")
    with pytest.raises(FeedError, match=r"is running \(flow run 0b7e5c1e-.*cancel that run"):
        catalog.retry_episode(db, one.episode_id)
    catalog.set_episode_state(db, two.episode_id, "done", wer=0.1)
    with pytest.raises(FeedError, match=r"is done: transcribe it again with `podscribe transcribe"):
        catalog.retry_episode(db, two.episode_id)
    with pytest.raises(FeedError, match="no episode 'nope'"):
        catalog.retry_episode(db, "nope")
    assert [r.state for r in catalog.list_episodes(db)] == ["running", "done"]  # untouched
    with pytest.raises(OptionsError, match="episode state 'stuck' is not one of"):
        catalog.list_episodes(db, state="stuck")


def test_failing_a_claim_that_moved_on_changes_nothing(db: Path | str) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    claim = catalog.claim_episode(db, one.episode_id)
    assert claim is not None
    catalog.set_episode_state(db, one.episode_id, "done", wer=0.3)
    # A late "stuck" verdict on that claim must not undo the finished run.
    assert (
        catalog.fail_running_episode(db, one.episode_id, "stuck", claim_id=claim.claim_id) is None
    )
    assert catalog.get_episode(db, one.episode_id).state == "done"
    reclaimed = catalog.set_episode_state(db, one.episode_id, "running")
    assert reclaimed.state == "running"
    assert catalog.fail_running_episode(db, one.episode_id, "stuck", claim_id="other") is None
    assert catalog.fail_running_episode(db, one.episode_id, "stuck") is not None


# --- old catalogs and several processes --------------------------------------------------------

_V1_CATALOG = """
CREATE TABLE feeds (url TEXT PRIMARY KEY, feed_id TEXT NOT NULL UNIQUE, title TEXT NOT NULL,
    added_at TEXT NOT NULL, last_polled_at TEXT);
CREATE TABLE episodes (episode_id TEXT PRIMARY KEY, feed_id TEXT NOT NULL REFERENCES
    feeds(feed_id), guid TEXT NOT NULL, title TEXT NOT NULL, audio_url TEXT NOT NULL,
    published TEXT, transcript_url TEXT, state TEXT NOT NULL DEFAULT 'new' CHECK (state IN
    ('new', 'running', 'done', 'failed')), last_wer REAL, last_error TEXT,
    updated_at TEXT NOT NULL, UNIQUE (feed_id, guid));
CREATE INDEX episodes_by_state ON episodes(state);
INSERT INTO feeds VALUES ('http://example.org/feed.xml', 'show-1', 'Show', '2025-06-01', NULL);
INSERT INTO episodes VALUES ('ep-a', 'show-1', 'g-a', 'A', 'http://example.org/a.mp3', NULL,
    NULL, 'failed', 0.5, 'disk full', '2025-06-02T00:00:00+00:00');
INSERT INTO episodes VALUES ('ep-b', 'show-1', 'g-b', 'B', 'http://example.org/b.mp3', NULL,
    NULL, 'running', NULL, NULL, '2025-06-02T00:00:00+00:00');
PRAGMA user_version = 1;
"""


def _make_v1_catalog(db: Path) -> None:
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db)
    conn.executescript(_V1_CATALOG)
    conn.close()


def test_a_version_1_catalog_is_migrated_in_place_by_racing_processes(sqlite_db: Path) -> None:
    db = sqlite_db
    _make_v1_catalog(db)
    code = f"from pipeline.sources import catalog; print(len(catalog.list_episodes({str(db)!r})))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    assert [p.communicate(timeout=60)[0].strip() for p in procs] == ["2"] * 4
    assert all(p.returncode == 0 for p in procs)
    a, b = catalog.list_episodes(db)
    assert (a.state, a.last_wer, a.last_error, a.attempts, a.next_attempt_at) == (
        "failed",
        0.5,
        "disk full",
        0,
        None,
    )
    # A v1 running row has no claim time: how long it has run counts from its last update.
    assert (b.state, b.claimed_at) == ("running", None)
    assert catalog.running_for(b, datetime(2025, 6, 2, 1, tzinfo=UTC)) == 3600
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    assert catalog.retry_episode(db, "ep-a").state == "new"  # v1 failures can be retried


def test_concurrent_claims_start_each_episode_once(db: Path | str) -> None:
    catalog.record_feed_episodes(db, _feed(*range(1, 9)))
    code = (
        "from pipeline.sources import catalog; "
        f"db = {str(db)!r}; "
        "rows = [catalog.claim_episode(db, r.episode_id) for r in catalog.due_episodes(db)]; "
        "print(' '.join(r.guid for r in rows if r is not None))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    claimed = [guid for p in procs for guid in p.communicate(timeout=60)[0].split()]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(claimed) == sorted(f"guid-{n}" for n in range(1, 9))  # each exactly once
    assert {r.attempts for r in catalog.list_episodes(db)} == {1}


_WORKER = """
import sys
from pipeline.sources import catalog, feed
db, worker, feeds = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
claimed = []
for _ in range(3):
    for path in feeds:
        catalog.record_feed_episodes(db, feed.fetch_feed(path))
        for due in catalog.due_episodes(db):
            row = catalog.claim_episode(db, due.episode_id)
            if row is not None:
                catalog.set_episode_state(db, row.episode_id, "done", wer=worker / 10)
                claimed.append(row.episode_id)
        catalog.list_episodes(db)
print(" ".join(claimed))
"""


def test_processes_and_cli_commands_hammering_one_catalog_keep_it_whole(
    db: Path | str, tmp_path: Path
) -> None:
    feeds = []
    for name in ("a", "b", "c"):
        items = [
            Item(f"{name} {n}", f"{name}-{n}", (f"http://example.org/{name}{n}.mp3", "audio/mpeg"))
            for n in range(20)
        ]
        path = tmp_path / f"{name}.xml"
        path.write_bytes(rss(f"Show {name}", items))
        feeds.append(str(path))
    cli = [sys.executable, "-m", "pipeline.cli.app"]
    commands = [
        [sys.executable, "-c", _WORKER, str(db), str(w), feeds[w], feeds[(w + 1) % 3]]
        for w in range(3)
    ]
    commands += [[*cli, "feed", "add", f, "--db", str(db)] for f in feeds]
    commands += [[*cli, "episodes", "--state", "done", "--db", str(db), "--json"]] * 2
    catalog.list_feeds(db)  # the file exists before the listing commands read it
    procs = [
        subprocess.Popen(c, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for c in commands
    ]
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err[-2000:]
    claims = [out.split() for out, _ in results[:3]]
    every = [episode for worker in claims for episode in worker]
    assert len(every) == len(set(every)) == 60  # each episode transcribed by one worker
    rows = {r.episode_id: r for r in catalog.list_episodes(db)}
    assert len(rows) == 60 and len(catalog.list_feeds(db)) == 3
    for worker, ids in enumerate(claims):
        assert all((rows[i].state, rows[i].last_wer) == ("done", worker / 10) for i in ids)
    for out, _ in results[-2:]:
        assert all(r["state"] == "done" for r in json.loads(out))
    if isinstance(db, Path):
        conn = sqlite3.connect(db)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        conn.close()


def test_cli_lists_failed_episodes_and_retries_one(cli: typer.Typer, db: Path | str) -> None:
    policy = catalog.RetryPolicy(max_attempts=1)
    [one, two, three] = catalog.record_feed_episodes(db, _feed(1, 2, 3))
    for ep, error in ((one, "chunk 3: CUDA out of memory"), (two, "HTTP 404 for ep 2")):
        catalog.claim_episode(db, ep.episode_id)
        catalog.fail_running_episode(db, ep.episode_id, error, policy)
    runner = CliRunner()
    env = {"COLUMNS": "250"}
    table = runner.invoke(cli, ["episodes", "--state", "failed", "--db", str(db)], env=env)
    assert table.exit_code == 0, table.output
    assert "CUDA out of memory" in table.output and "HTTP 404 for ep 2" in table.output
    assert "failed (no retry left)" in table.output and "Episode 3" not in table.output
    listed = runner.invoke(cli, ["episodes", "--state", "failed", "--db", str(db), "--json"])
    assert [(r["episode_id"], r["attempts"]) for r in json.loads(listed.output)] == [
        (one.episode_id, 1),
        (two.episode_id, 1),
    ]

    retried = runner.invoke(cli, ["episodes", "retry", one.episode_id, "--db", str(db)], env=env)
    assert retried.exit_code == 0, retried.output
    assert f"{one.episode_id} was failed after 1 attempt(s) (chunk 3: CUDA out of memory)" in (
        retried.output
    )
    assert "the next poll" in retried.output
    assert [r.episode_id for r in catalog.due_episodes(db)] == [one.episode_id, three.episode_id]

    # As a user types it: one line on stderr, exit status 2, nothing changed.
    catalog.claim_episode(db, three.episode_id)
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.app", "episodes", "retry", three.episode_id]
        + ["--db", str(db)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert f"episode {three.episode_id!r}" in done.stderr and "is running" in done.stderr
    assert catalog.get_episode(db, three.episode_id).state == "running"


# --- PostgreSQL ---------------------------------------------------------------------------------


def test_postgres_schema_is_created_once_by_racing_processes(postgres_url: str) -> None:
    code = f"from pipeline.sources import catalog; print(len(catalog.list_feeds({postgres_url!r})))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    assert [p.communicate(timeout=60)[0].strip() for p in procs] == ["0"] * 4
    import psycopg

    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM podscribe_schema").fetchall() == [(3,)]
    catalog.close_catalog(postgres_url)


def test_postgres_url_errors_name_it_without_its_password(postgres_cluster: object) -> None:
    url = "postgresql://someone:s3cret@127.0.0.1:1/nowhere"  # port 1: nothing listens there
    assert catalog.describe(url) == "postgresql+psycopg://someone:***@127.0.0.1:1/nowhere"
    with pytest.raises(
        FeedError,
        match=r"cannot open the catalog postgresql\+psycopg://"
        r"someone:\*\*\*@127.0.0.1:1/nowhere: .*check PODSCRIBE_DB",
    ) as caught:
        catalog.list_feeds(url)
    assert "s3cret" not in str(caught.value)
    with pytest.raises(OptionsError, match="use a SQLite file path or a postgresql:// URL"):
        catalog.list_feeds("mysql://u@127.0.0.1/db")


def test_settings_keep_a_catalog_url_as_text_and_a_path_as_a_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.settings import load_settings

    url = "postgresql://podscribe:pw@db.example.org:5432/podscribe"
    monkeypatch.setenv("PODSCRIBE_DB", url)
    assert load_settings().db == url  # Path() would fold its "//"
    assert load_settings(db="elsewhere/cat.db").db == Path("elsewhere/cat.db")
    monkeypatch.setenv("PODSCRIBE_DB", "data/podscribe.db")
    assert load_settings().db == Path("data/podscribe.db")


# --- the feed's persons --------------------------------------------------------------------------


def _with_persons(feed: Feed, *persons: Person) -> Feed:
    episodes = tuple(dataclasses.replace(e, persons=persons) for e in feed.episodes)
    return dataclasses.replace(feed, episodes=episodes)


def test_persons_are_kept_and_follow_the_feed(db: Path | str) -> None:
    alice = Person("Alice Smith", "host", "cast", "https://example.org/alice")
    catalog.record_feed_episodes(db, _with_persons(_feed(1), alice))
    catalog.record_feed_episodes(db, _feed(2))
    one, two = catalog.list_episodes(db)
    assert (one.persons, two.persons) == ((alice,), ())
    # A claim (what starts a run later) carries them.
    assert catalog.claim_episode(db, one.episode_id).persons == (alice,)  # type: ignore[union-attr]
    # A feed that changes its list updates the row; one that drops it leaves the row's.
    bob = Person("Bob", "guest")
    catalog.record_feed_episodes(db, _with_persons(_feed(1, 2), bob))
    assert [r.persons for r in catalog.list_episodes(db)] == [(bob,), (bob,)]
    catalog.record_feed_episodes(db, _feed(1, 2))
    assert [r.persons for r in catalog.list_episodes(db)] == [(bob,), (bob,)]


def test_a_version_2_postgres_catalog_gains_the_persons_column(postgres_url: str) -> None:
    import psycopg

    catalog.record_feed_episodes(postgres_url, _feed(1))
    catalog.close_catalog(postgres_url)  # the next call checks the schema version again
    with psycopg.connect(postgres_url) as conn:  # as version 2 left it
        conn.execute("ALTER TABLE episodes DROP COLUMN persons")
        conn.execute("UPDATE podscribe_schema SET version = 2")
    catalog.record_feed_episodes(postgres_url, _with_persons(_feed(1, 2), Person("Alice")))
    assert [r.persons for r in catalog.list_episodes(postgres_url)] == [(Person("Alice"),)] * 2
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT version FROM podscribe_schema").fetchall() == [(3,)]
    catalog.close_catalog(postgres_url)
