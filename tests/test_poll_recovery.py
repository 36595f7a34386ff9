"""poll-feeds against a real Prefect server: failed episodes retried, stuck ones recovered,
failed deployment calls, and the same episode submitted twice at once.

The deployment tests register transcribe-episode without serving it: its runs stay Scheduled
(alive, never executed), so they check what the poll decides without transcribing anything.
The tests that transcribe use the real tiny.en model (slow).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import FIXTURES_DIR, LocalHTTPServer, Reply
from feedgen import Item, rss

from pipeline.sources import catalog
from pipeline.sources.feed import fetch_feed
from pipeline.sources.net import FetchLimits

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def flow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> Path:
    """Flows write under tmp_path; retries are due at once unless a test says otherwise."""
    for name in ("results_dir", "audio_root", "transcripts_root"):
        monkeypatch.setenv(f"PODSCRIBE_{name.upper()}", str(tmp_path / name))
    monkeypatch.setenv("PODSCRIBE_DB", str(tmp_path / "catalog.db"))
    monkeypatch.setenv("PODSCRIBE_RETRY_BACKOFF_S", "0")
    return tmp_path


def _feed(server: LocalHTTPServer, path: str, title: str, items: list[tuple[str, str]]) -> str:
    """A feed of (guid, enclosure path) items, each the 7 s speech fixture."""
    entries = []
    for guid, audio_path in items:
        audio = server.route(
            audio_path,
            Reply((FIXTURES_DIR / "speech.ogg").read_bytes(), content_type="audio/ogg"),
        )
        entries.append(
            Item(
                f"{title} {guid}",
                guid,
                (audio, "audio/ogg"),
                published="Mon, 02 Jun 2025 10:00:00 GMT",
            )
        )
    return server.route(path, Reply(rss(title, entries), content_type="application/rss+xml"))


def _apply_transcribe_deployment() -> None:
    """Register transcribe-episode (as `podscribe serve` does) without serving it."""
    from flows.episode import transcribe_episode

    transcribe_episode.to_deployment(name="transcribe-episode").apply()


def _flow_run(run_id: str) -> Any:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(uuid.UUID(run_id))


def _cancel(run_id: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(uuid.UUID(run_id), Cancelled(), force=True)


def test_a_run_that_ended_without_a_result_is_recovered_and_retried_up_to_the_limit(
    flow_env: Path, http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.feeds import poll_feeds

    monkeypatch.setenv("PODSCRIBE_RETRY_MAX_ATTEMPTS", "2")
    db = flow_env / "catalog.db"
    _apply_transcribe_deployment()
    url = _feed(http_server, "/feed.xml", "Deployed", [("d-1", "/d1.ogg")])

    first = poll_feeds(feeds=[url], via_deployment=True)
    [row] = catalog.list_episodes(db)
    assert first["started"] == [row.episode_id] and first["recovered"] == []
    assert (row.state, row.attempts) == ("running", 1) and row.flow_run_id is not None
    run = _flow_run(row.flow_run_id)
    assert run.state is not None and run.state.name == "Scheduled"
    assert run.parameters["episode_id"] == row.episode_id
    assert run.idempotency_key == f"{row.episode_id}-{row.claim_id}"

    # Its run is alive (Scheduled): a second poll neither recovers nor starts it again.
    second = poll_feeds(feeds=[url], via_deployment=True)
    assert (second["started"], second["recovered"], second["skipped"]) == ([], [], [row.episode_id])
    assert catalog.get_episode(db, row.episode_id).flow_run_id == row.flow_run_id

    # The run is cancelled (or crashed) without the flow body recording anything.
    _cancel(row.flow_run_id)
    third = poll_feeds(feeds=[url], via_deployment=True)
    assert third["recovered"] == [row.episode_id] and third["started"] == [row.episode_id]
    retried = catalog.get_episode(db, row.episode_id)
    assert (retried.state, retried.attempts) == ("running", 2)
    assert retried.last_error == (
        f"stuck: its flow run {row.flow_run_id} ended Cancelled while it was running"
    )
    # A new claim gets a new run (the first one's idempotency key is not reused).
    assert retried.flow_run_id not in (None, row.flow_run_id)

    assert retried.flow_run_id is not None
    _cancel(retried.flow_run_id)
    fourth = poll_feeds(feeds=[url], via_deployment=True)
    assert fourth["recovered"] == [row.episode_id] and fourth["started"] == []
    final = catalog.get_episode(db, row.episode_id)
    assert (final.state, final.attempts, final.next_attempt_at) == ("failed", 2, None)
    assert final.last_error is not None and final.last_error.startswith("stuck: its flow run")
    assert [r.episode_id for r in catalog.list_episodes(db, state="failed")] == [row.episode_id]


def test_running_episodes_without_a_live_run_are_recovered_after_the_timeout(
    flow_env: Path, http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.deployments import run_deployment

    from flows.feeds import TRANSCRIBE_DEPLOYMENT, poll_feeds

    monkeypatch.setenv("PODSCRIBE_RUNNING_TIMEOUT_S", "3600")
    monkeypatch.setenv("PODSCRIBE_RETRY_BACKOFF_S", "600")  # recovered, not restarted at once
    db = flow_env / "catalog.db"
    _apply_transcribe_deployment()
    items = [(f"s-{n}", f"/s{n}.ogg") for n in range(5)]
    url = _feed(http_server, "/stuck.xml", "Stuck", items)
    catalog.record_feed_episodes(
        db, fetch_feed(url, limits=FetchLimits(allow_private_networks=True))
    )
    rows = catalog.list_episodes(db)
    long_ago = datetime.now(UTC) - timedelta(hours=2)
    recent = datetime.now(UTC) - timedelta(minutes=5)
    alive = run_deployment(TRANSCRIBE_DEPLOYMENT, parameters={"source": "x"}, timeout=0)
    cases = {  # episode → (claimed at, flow run recorded)
        rows[0].episode_id: (long_ago, None),  # its poll died before starting a run
        rows[1].episode_id: (long_ago, str(uuid.uuid4())),  # a run Prefect does not know
        rows[2].episode_id: (recent, None),  # being started right now
        rows[3].episode_id: (recent, str(uuid.uuid4())),  # unknown run, but not for long
        rows[4].episode_id: (long_ago, str(alive.id)),  # a long but live run
    }
    for episode_id, (claimed_at, run_id) in cases.items():
        assert catalog.claim_episode(db, episode_id, now=claimed_at) is not None
        if run_id:
            catalog.record_flow_run(db, episode_id, run_id)

    summary = poll_feeds(feeds=[url], via_deployment=True)
    assert sorted(summary["recovered"]) == sorted([rows[0].episode_id, rows[1].episode_id])
    assert summary["started"] == []  # the recovered ones wait for their backoff
    after = {r.episode_id: r for r in catalog.list_episodes(db)}
    assert [after[r.episode_id].state for r in rows] == ["failed"] * 2 + ["running"] * 3
    assert re.fullmatch(
        r"stuck: running for 720\d s \(> 3600 s\) with no flow run recorded",
        after[rows[0].episode_id].last_error or "",
    )
    assert re.fullmatch(
        rf"stuck: running for 720\d s \(> 3600 s\) and its flow run "
        rf"{cases[rows[1].episode_id][1]} is unknown to Prefect",
        after[rows[1].episode_id].last_error or "",
    )
    assert all(after[r.episode_id].next_attempt_at is not None for r in rows[:2])


OLD_TRANSCRIBE_FLOW = '''
from prefect import flow

@flow(name="transcribe-episode")
def transcribe_episode(source: str, language: str) -> None:
    """An older transcribe-episode that needs a parameter this poll does not send."""
'''


def test_an_episode_whose_deployment_call_raised_is_not_left_running(
    flow_env: Path, http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    from flows.feeds import poll_feeds

    module = tmp_path / "old_podscribe_flows.py"
    module.write_text(OLD_TRANSCRIBE_FLOW)
    sys.path.insert(0, str(tmp_path))
    try:
        from old_podscribe_flows import transcribe_episode as old  # type: ignore[import-not-found]

        # A deployment left by another podscribe version: the server refuses our parameters.
        old.to_deployment(name="transcribe-episode", enforce_parameter_schema=True).apply()
        url = _feed(http_server, "/raise.xml", "Raise", [("r-1", "/r1.ogg"), ("r-2", "/r2.ogg")])
        summary = poll_feeds(feeds=[url], via_deployment=True)
    finally:
        sys.path.remove(str(tmp_path))
        _apply_transcribe_deployment()  # leave the session's server with the real one
    db = flow_env / "catalog.db"
    rows = catalog.list_episodes(db)
    assert summary["started"] == [r.episode_id for r in rows]  # both tried
    for row in rows:
        assert (row.state, row.attempts, row.flow_run_id) == ("failed", 1, None)
        assert row.last_error is not None and row.last_error.startswith(
            "could not start deployment transcribe-episode/transcribe-episode: "
        ), row.last_error
        assert "'language' is a required property" in row.last_error
        assert row.next_attempt_at is not None  # retried by a later poll


# --- with transcription (tiny.en) --------------------------------------------------------------


@pytest.mark.slow
def test_a_failed_episode_waits_for_its_backoff_and_is_transcribed_once_retried(
    flow_env: Path, http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.feeds import poll_feeds

    monkeypatch.setenv("PODSCRIBE_RETRY_BACKOFF_S", "3600")
    db = flow_env / "catalog.db"
    url = _feed(http_server, "/flaky.xml", "Flaky", [("f-1", "/f1.ogg")])
    audio = http_server.route("/f1.ogg")  # gone for now (404)

    first = poll_feeds(feeds=[url])
    [row] = catalog.list_episodes(db)
    assert first["started"] == [row.episode_id]
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.last_error is not None and "404" in row.last_error and audio in row.last_error
    assert row.next_attempt_at is not None and row.next_attempt_at > row.updated_at

    second = poll_feeds(feeds=[url])  # within the backoff: left alone
    assert (second["started"], second["skipped"]) == ([], [row.episode_id])
    assert http_server.hits["/f1.ogg"] == 1

    _feed(http_server, "/flaky.xml", "Flaky", [("f-1", "/f1.ogg")])  # the audio is back
    assert catalog.retry_episode(db, row.episode_id).state == "new"  # `podscribe episodes retry`
    third = poll_feeds(feeds=[url])
    assert third["started"] == [row.episode_id]
    done = catalog.get_episode(db, row.episode_id)
    assert (done.state, done.attempts, done.last_error) == ("done", 1, None)
    # Run in the poll's process, the episode's flow run noted itself on the row.
    assert done.flow_run_id is not None
    assert _flow_run(done.flow_run_id).name == "transcribe Flaky f-1"
    assert (flow_env / "transcripts_root" / row.episode_id / "transcript.json").is_file()


@pytest.mark.slow
def test_two_feeds_sharing_an_enclosure_keep_their_own_episodes_and_files(
    flow_env: Path, http_server: LocalHTTPServer
) -> None:
    from flows.feeds import poll_feeds

    db = flow_env / "catalog.db"
    feed_a = _feed(http_server, "/a.xml", "Show A", [("same-guid", "/shared.ogg")])
    feed_b = _feed(http_server, "/b.xml", "Show B", [("same-guid", "/shared.ogg")])
    summary = poll_feeds(feeds=[feed_a, feed_b])
    rows = catalog.list_episodes(db)
    assert len(rows) == 2 and rows[0].episode_id != rows[1].episode_id
    assert rows[0].audio_url == rows[1].audio_url and rows[0].feed_id != rows[1].feed_id
    assert sorted(summary["started"]) == sorted(r.episode_id for r in rows)
    assert [r.state for r in rows] == ["done", "done"]
    for row in rows:  # each its own audio and transcript folders, neither overwritten
        out = flow_env / "transcripts_root" / row.episode_id
        transcript = (out / "transcript.json").read_text()
        assert row.episode_id in transcript and "the" in transcript.lower()
        assert (flow_env / "audio_root" / row.episode_id).is_dir()
    assert http_server.hits["/shared.ogg"] == 2


TWO_POLLS = """
import json, sys
from flows.feeds import poll_feeds
print("SUMMARY " + json.dumps(poll_feeds(feeds=[sys.argv[1]])))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_polls_at_once_transcribe_an_episode_once(
    flow_env: Path,
    http_server: LocalHTTPServer,
    prefect_api: str,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db: Path | str = flow_env / "catalog.db"
    if backend == "postgresql":  # two pollers' processes, one catalog server between them
        db = request.getfixturevalue("postgres_url")
        monkeypatch.setenv("PODSCRIBE_DB", db)
    # Run names are unique per backend: both variants' runs live on the session's server.
    url = _feed(http_server, "/twice.xml", f"Twice {backend}", [("t-1", "/t1.ogg")])
    env = os.environ | {"PREFECT_API_URL": prefect_api}
    polls = [
        subprocess.Popen(
            [sys.executable, "-c", TWO_POLLS, url],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in polls]
    for poll, (_, err) in zip(polls, outputs, strict=True):
        assert poll.returncode == 0, err[-3000:]
    summaries = [
        json.loads(line.removeprefix("SUMMARY "))
        for out, _ in outputs
        for line in out.splitlines()
        if line.startswith("SUMMARY ")
    ]
    [row] = catalog.list_episodes(db)
    assert sorted(s["started"] for s in summaries) == [[], [row.episode_id]]
    assert (row.state, row.attempts) == ("done", 1)
    assert http_server.hits["/t1.ogg"] == 1
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[f"transcribe Twice {backend} t-1"])
            )
        )
    assert len(runs) == 1 and str(runs[0].id) == row.flow_run_id
    catalog.close_catalog(db)
