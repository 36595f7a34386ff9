"""Shared test helpers: the committed fixtures, ffmpeg for making audio, a local HTTP server."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pg_cluster import PostgresCluster, find_bindir
from s3_server import MotoServer, s3_env
from stack import PrefectServer, prefect_server

from pipeline.audio.decode import find_ffmpeg

FIXTURES_DIR = Path(__file__).parent / "fixtures"
# Debian's chromium, driven by Playwright (never `playwright install`: no download here), with the
# flags that keep it from calling out (../shared/NOTES.md).


def serve_env(api_url: str, work: Path, **extra: str) -> dict[str, str]:
    """The environment of a `podscribe serve` subprocess against ``api_url`` that writes
    everything under ``work`` (results, audio, transcripts, catalog), offline."""
    return os.environ | {
        "PREFECT_API_URL": api_url,
        "PREFECT_RUNNER_POLL_FREQUENCY": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PODSCRIBE_RESULTS_DIR": str(work / "results"),
        "PODSCRIBE_AUDIO_ROOT": str(work / "audio"),
        "PODSCRIBE_TRANSCRIPTS_ROOT": str(work / "transcripts"),
        "PODSCRIBE_DB": str(work / "catalog.db"),
        **extra,
    }


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# Every test server is on 127.0.0.1, a loopback address podscribe refuses by default. Tests that
# go through the CLI or the flows (which build their limits from the settings) need the
# allowance; library tests pass FetchLimits(allow_private_networks=True) explicitly, and
# test_hostile.py removes this to check the default refusal.
os.environ["PODSCRIBE_ALLOW_PRIVATE_NETWORKS"] = "true"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures (speech.ogg, episode.mp3 and their reference texts)."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    """The ffmpeg the pipeline itself would use."""
    return find_ffmpeg()


@pytest.fixture(scope="session")
def run_ffmpeg(ffmpeg_exe: str) -> Callable[..., Path]:
    """Run ffmpeg with the given arguments (the last one is the output) and return that path.

    For making test audio from lavfi sources, e.g.
    ``run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3", tmp_path / "tone.wav")``.
    """

    def run(*args: str | Path) -> Path:
        cmd = [ffmpeg_exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        done = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg {' '.join(map(str, args))} failed: {done.stderr}")
        return Path(args[-1])

    return run


@dataclass(frozen=True)
class Reply:
    """One canned HTTP answer of the local test server."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/octet-stream"
    delay_s: float = 0.0  # wait before answering, to make a client time out
    headers: tuple[tuple[str, str], ...] = ()  # extra headers, e.g. ("Location", url)
    content_length: int | None = -1  # -1: the body's real length; None: no header (HTTP/1.0)
    drip_s: float = 0.0  # send the body one byte at a time, this many seconds apart


class LocalHTTPServer:
    """Routes of an http.server on 127.0.0.1: each path answers its replies in turn.

    The last reply of a path repeats, so ``route("/f", Reply(status=500), Reply(b"ok"))`` is a
    server that fails once and then recovers. Unknown paths answer 404; ``hits`` counts requests.
    """

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.hits: Counter[str] = Counter()
        self._routes: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()

    def url(self, path: str) -> str:
        """The full URL of ``path`` (which starts with "/")."""
        return self.base_url + path

    def route(self, path: str, *replies: Reply | bytes) -> str:
        """Serve ``replies`` (bytes mean a 200 with that body) at ``path``; return its URL."""
        with self._lock:
            self._routes[path] = [r if isinstance(r, Reply) else Reply(r) for r in replies]
        return self.url(path)

    def next_reply(self, path: str) -> Reply:
        with self._lock:
            self.hits[path] += 1
            replies = self._routes.get(path)
            if not replies:
                return Reply(b"not found", status=404, content_type="text/plain")
            return replies.pop(0) if len(replies) > 1 else replies[0]


def assert_same_decodes(ours: Sequence[Any], theirs: Sequence[Any]) -> None:
    """Two lists of whisper DecodingResults agree: the same tokens, and log-probabilities and
    no-speech probabilities equal up to float rounding (the output projection sums in another
    order: vocab_logits)."""
    assert [r.tokens for r in ours] == [r.tokens for r in theirs]
    assert [r.avg_logprob for r in ours] == pytest.approx([r.avg_logprob for r in theirs], rel=1e-4)
    assert [r.no_speech_prob for r in ours] == pytest.approx(
        [r.no_speech_prob for r in theirs], rel=1e-4
    )


def serve_demo_episode(server: LocalHTTPServer, n: int) -> tuple[str, tuple[tuple[str, str]]]:
    """The project's demo episode ``n`` (pipeline/data/demo) served by ``server``: the URL of
    its MP3 and its reference text as a feed's transcript link (URL, MIME type)."""
    from pipeline.demo import DEMO_DIR

    audio = server.route(
        f"/ep{n}.mp3",
        Reply((DEMO_DIR / f"episode-{n}.mp3").read_bytes(), content_type="audio/mpeg"),
    )
    text = server.route(
        f"/ep{n}.txt",
        Reply((DEMO_DIR / f"episode-{n}.txt").read_bytes(), content_type="text/plain"),
    )
    return audio, ((text, "text/plain"),)


def _handler_for(server: LocalHTTPServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            reply = server.next_reply(self.path.split("?")[0])
            time.sleep(reply.delay_s)
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", reply.content_type)
                length = len(reply.body) if reply.content_length == -1 else reply.content_length
                if length is not None:
                    self.send_header("Content-Length", str(length))
                for name, value in reply.headers:
                    self.send_header(name, value)
                self.end_headers()
                if not reply.drip_s:
                    self.wfile.write(reply.body)
                for i in range(len(reply.body) if reply.drip_s else 0):
                    self.wfile.write(reply.body[i : i + 1])
                    self.wfile.flush()
                    time.sleep(reply.drip_s)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (a timeout test): nothing to answer

        def log_message(self, format: str, *args: object) -> None:
            pass  # keep test output quiet

    return Handler


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A real HTTP server on 127.0.0.1 with canned routes (see LocalHTTPServer)."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    server = LocalHTTPServer(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler_for(server)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[str]:
    """One temporary Prefect server (SQLite) for every flow test; yields its API URL."""
    import os

    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 for the whole session, stopped at its end."""
    bindir = find_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL binaries (initdb, pg_ctl) not found: `apt-get install postgresql` "
            "(scripts/setup.sh installs it)"
        )
    cluster = PostgresCluster(bindir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """The URL of a new, empty database on the session's PostgreSQL cluster."""
    return postgres_cluster.new_database()


@pytest.fixture
def prefect_on_postgres(
    postgres_cluster: PostgresCluster, tmp_path: Path
) -> Iterator[PrefectServer]:
    """`prefect server start` with its state in a new database on the cluster."""
    with prefect_server(postgres_cluster.new_database(), tmp_path / "prefect-server") as server:
        yield server


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """moto's S3-compatible server on 127.0.0.1 for the whole session (the dev extra has it)."""
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_root(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """An ``s3://`` storage root in a fresh bucket of the test's S3 server; this process's
    environment points boto/s3fs at that server and nowhere else."""
    for name, value in s3_env(moto_server.endpoint).items():
        monkeypatch.setenv(name, value)
    return f"s3://{moto_server.new_bucket()}/podscribe"
