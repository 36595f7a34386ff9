"""The production stack, started for real: PostgreSQL from the distribution's package, a Prefect
server on it, the catalog on it, and one poll-feeds of a local feed end to end.

docker-compose.yml describes the same stack; test_compose.py validates that file.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import FIXTURES_DIR, LocalHTTPServer, Reply
from feedgen import Item, rss
from pg_cluster import PostgresCluster

from pipeline.sources import catalog

ROOT = Path(__file__).resolve().parent.parent
SERVER_START_S = 180  # a fresh server migrates Prefect's schema into PostgreSQL first

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(900)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PrefectServer:
    api: str  # PREFECT_API_URL
    database: str  # the PostgreSQL database it keeps its state in


@pytest.fixture
def prefect_on_postgres(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> Iterator[PrefectServer]:
    """`prefect server start` with its database on the cluster, until the test ends."""
    database = postgres_cluster.new_database()
    port = _free_port()
    env = os.environ | {
        # The asyncpg driver comes with Prefect's server.
        "PREFECT_API_DATABASE_CONNECTION_URL": database.replace(
            "postgresql://", "postgresql+asyncpg://", 1
        ),
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log = (tmp_path / "prefect-server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        _wait_healthy(api, server, tmp_path / "prefect-server.log")
        yield PrefectServer(api, database)
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def _wait_healthy(api: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"prefect server exited: {log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    pytest.fail(f"prefect server not healthy after {SERVER_START_S}s: {log.read_text()[-3000:]}")


POLL = """
import json, sys
from flows.feeds import poll_feeds
print("SUMMARY " + json.dumps(poll_feeds(feeds=[sys.argv[1]])))
"""


def test_one_poll_of_a_feed_on_postgres_end_to_end(
    prefect_on_postgres: PrefectServer,
    postgres_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
) -> None:
    audio = http_server.route(
        "/ep1.ogg", Reply((FIXTURES_DIR / "speech.ogg").read_bytes(), content_type="audio/ogg")
    )
    reference = http_server.route(
        "/ep1.txt", Reply((FIXTURES_DIR / "speech.txt").read_bytes(), content_type="text/plain")
    )
    item = Item("Stack 1", "stack-1", (audio, "audio/ogg"), ((reference, "text/plain"),))
    feed = http_server.route(
        "/stack.xml", Reply(rss("Stack", [item]), content_type="application/rss+xml")
    )
    env = os.environ | {
        "PREFECT_API_URL": prefect_on_postgres.api,
        "PODSCRIBE_DB": postgres_url,
        "PODSCRIBE_AUDIO_ROOT": str(tmp_path / "audio"),
        "PODSCRIBE_TRANSCRIPTS_ROOT": str(tmp_path / "transcripts"),
        "PODSCRIBE_RESULTS_DIR": str(tmp_path / "results"),
    }
    poll = subprocess.run(
        [sys.executable, "-c", POLL, feed],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert poll.returncode == 0, poll.stderr[-3000:]
    [row] = catalog.list_episodes(postgres_url)
    summary = next(line for line in poll.stdout.splitlines() if line.startswith("SUMMARY "))
    assert row.episode_id in summary
    assert (row.state, row.attempts, row.last_error) == ("done", 1, None)
    assert row.last_wer is not None and row.last_wer < 0.5  # scored against the feed's text
    assert "the" in (tmp_path / "transcripts" / row.episode_id / "transcript.json").read_text()
    # The flow runs are in Prefect's tables in PostgreSQL: the server's own database.
    with psycopg.connect(prefect_on_postgres.database) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM flow_run").fetchall()}
        state = conn.execute(
            "SELECT state_type FROM flow_run WHERE id = %s", (row.flow_run_id,)
        ).fetchone()
    assert {"poll feeds", "transcribe Stack 1"} <= names
    assert state is not None and state[0] == "COMPLETED"
    catalog.close_catalog(postgres_url)
