"""The SQLite catalog: new episodes once, states and WER, several processes, and the CLI."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
from conftest import LocalHTTPServer, Reply
from feedgen import Item, rss
from typer.testing import CliRunner

from pipeline.cli.feeds import register
from pipeline.core.errors import FeedError, OptionsError
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


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "transcripts" / "podscribe.db"


def test_new_episodes_are_returned_once(db: Path) -> None:
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


def test_feed_keeps_its_id_when_renamed(db: Path) -> None:
    catalog.add_feed(db, _feed(1))
    renamed = parse_feed(rss("New Name", [_item(1), _item(2)]), FEED_URL)
    assert renamed.feed_id != _feed(1).feed_id
    assert [e.guid for e in catalog.record_feed_episodes(db, renamed)] == ["guid-1", "guid-2"]
    [feed] = catalog.list_feeds(db)
    assert (feed.feed_id, feed.title) == (_feed(1).feed_id, "New Name")
    assert {r.feed_id for r in catalog.list_episodes(db)} == {feed.feed_id}


def test_states_and_wer(db: Path) -> None:
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


def test_rows_are_frozen_dataclasses(db: Path) -> None:
    catalog.record_feed_episodes(db, _feed(1))
    row = catalog.list_episodes(db)[0]
    assert dataclasses.is_dataclass(row)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.state = "done"  # type: ignore[misc]


def test_claim_episode_once(db: Path) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    first = catalog.claim_episode(db, one.episode_id)
    assert first is not None and (first.state, first.attempts) == ("running", 1)
    assert catalog.claim_episode(db, one.episode_id) is None
    catalog.set_episode_state(db, one.episode_id, "failed", error="x")
    assert catalog.claim_episode(db, one.episode_id) is None  # not before its backoff
    later = datetime.now(UTC) + timedelta(hours=1)
    second = catalog.claim_episode(db, one.episode_id, now=later)
    assert second is not None and second.attempts == 2 and second.claim_id != first.claim_id


def test_transcript_link_arriving_later_is_recorded(db: Path) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    assert catalog.get_episode(db, one.episode_id).transcript_url is None
    catalog.set_episode_state(db, one.episode_id, "done")
    assert catalog.record_feed_episodes(db, _feed(1, transcripts=True)) == []
    row = catalog.get_episode(db, one.episode_id)
    assert (row.transcript_url, row.state) == ("http://example.org/t/1.vtt", "done")


def test_bad_state_and_unknown_episode(db: Path) -> None:
    [one] = catalog.record_feed_episodes(db, _feed(1))
    with pytest.raises(OptionsError, match="episode state 'finished' is not one of new, running"):
        catalog.set_episode_state(db, one.episode_id, "finished")
    with pytest.raises(FeedError, match=r"no episode 'nope' in .*podscribe.db"):
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


def test_another_process_sees_updates(db: Path) -> None:
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


def test_concurrent_polls_record_each_episode_once(db: Path, tmp_path: Path) -> None:
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
    cli: typer.Typer, db: Path, http_server: LocalHTTPServer
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


def test_cli_bad_input(cli: typer.Typer, db: Path, http_server: LocalHTTPServer) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["episodes", "--db", str(db)])
    assert isinstance(missing.exception, FeedError)
    assert str(missing.exception).startswith(f"no catalog at {db}")
    assert not db.exists()  # listing never creates a catalog

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
