"""fetch_source against a real HTTP server on 127.0.0.1, and on local files."""

from __future__ import annotations

import contextlib
import hashlib
import random
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.core.errors import FetchError, SourceError
from pipeline.sources.fetch import episode_id_for, fetch_source
from pipeline.sources.net import FetchLimits

BODY = random.Random(0).randbytes(200_000)  # stands in for an mp3; only bytes matter here
# The test server is on 127.0.0.1, which podscribe refuses unless local networks are allowed.
LOCAL = FetchLimits(allow_private_networks=True)


def local(**limits: float) -> FetchLimits:
    """LOCAL with some limits changed."""
    return FetchLimits(allow_private_networks=True, **limits)  # type: ignore[arg-type]


FAST = {"backoff_s": 0.01}  # retries without the real backoff's seconds of waiting


class EpisodeHandler(BaseHTTPRequestHandler):
    """Serves BODY under paths that each misbehave in one way real podcast hosts do."""

    requests: list[tuple[str, str | None]] = []  # (path, Range header) of every request
    hits: dict[str, int] = {}

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        path = self.path.split("?")[0]
        self.requests.append((path, self.headers.get("Range")))
        self.hits[path] = self.hits.get(path, 0) + 1
        first = self.hits[path] == 1
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self._route(path, first)  # a client that gave up (timeout tests) is fine

    def _route(self, path: str, first: bool) -> None:
        if path in ("/ep.mp3", "/ep2.mp3"):
            self._send_body(honour_range=True)
        elif path == "/norange.mp3":
            self._send_body(honour_range=False)
        elif path == "/flaky.mp3":
            self._send_body(honour_range=True) if not first else self._status(500)
        elif path == "/always500.mp3":
            self._status(503)
        elif path == "/page.mp3":
            self._send(b"<html><body>Episode not found</body></html>", "text/html; charset=utf-8")
        elif path == "/api.mp3":
            self._send(b'{"error": "no"}', "application/json")
        elif path == "/slow.mp3":
            time.sleep(2)
            self._send_body(honour_range=True)
        elif path == "/drop.mp3" and first:
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY[: len(BODY) // 2])
            self.wfile.flush()  # then the handler returns and HTTP/1.0 closes the connection
        elif path == "/drop.mp3":
            self._send_body(honour_range=True)
        elif path == "/nolength.mp3":
            self.send_response(200)
            self.send_header("Content-Type", "audio/mpeg")
            self.end_headers()
            self.wfile.write(BODY)
        else:
            self._status(404)

    def _status(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, data: bytes, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _send_body(self, honour_range: bool) -> None:
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if not (honour_range and wanted):
            self._send(BODY, "audio/mpeg")
            return
        start = int(wanted.group(1))
        if start >= len(BODY):
            self._status(416)
            return
        self.send_response(206)
        self.send_header("Content-Type", "audio/mpeg")
        self.send_header("Content-Range", f"bytes {start}-{len(BODY) - 1}/{len(BODY)}")
        self.send_header("Content-Length", str(len(BODY) - start))
        self.end_headers()
        self.wfile.write(BODY[start:])


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), EpisodeHandler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def fresh_log():
    EpisodeHandler.requests.clear()
    EpisodeHandler.hits.clear()


def requested(path: str) -> list[str | None]:
    """The Range headers of the requests made for ``path``."""
    return [rng for p, rng in EpisodeHandler.requests if p == path]


def test_downloads_with_checksum_and_sidecar(tmp_path, server):
    got = fetch_source(f"{server}/ep.mp3", tmp_path, limits=LOCAL)
    assert got.path == (tmp_path / "ep.mp3").resolve()
    assert got.path.read_bytes() == BODY
    assert got.sha256 == hashlib.sha256(BODY).hexdigest()
    assert (got.origin, got.size_bytes, got.content_type) == (
        f"{server}/ep.mp3",
        len(BODY),
        "audio/mpeg",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.mp3", "ep.mp3.sha256.json"]


def test_completed_download_is_not_fetched_again(tmp_path, server):
    first = fetch_source(f"{server}/ep.mp3", tmp_path, limits=LOCAL)
    second = fetch_source(f"{server}/ep.mp3", tmp_path, limits=LOCAL)
    assert second == first
    assert len(requested("/ep.mp3")) == 1


def test_changed_file_is_fetched_again(tmp_path, server):
    first = fetch_source(f"{server}/ep.mp3", tmp_path, limits=LOCAL)
    first.path.write_bytes(b"x" * len(BODY))  # same size, different bytes
    again = fetch_source(f"{server}/ep.mp3", tmp_path, limits=LOCAL)
    assert again.path.read_bytes() == BODY
    assert len(requested("/ep.mp3")) == 2


def test_resumes_after_connection_drops_mid_body(tmp_path, server):
    got = fetch_source(f"{server}/drop.mp3", tmp_path, limits=LOCAL, **FAST)
    assert got.path.read_bytes() == BODY
    assert got.sha256 == hashlib.sha256(BODY).hexdigest()
    assert requested("/drop.mp3") == [None, f"bytes={len(BODY) // 2}-"]


def test_resumes_a_part_file_left_by_an_earlier_run(tmp_path, server):
    (tmp_path / "ep2.mp3.part").write_bytes(BODY[:1234])
    got = fetch_source(f"{server}/ep2.mp3", tmp_path, limits=LOCAL)
    assert got.path.read_bytes() == BODY
    assert requested("/ep2.mp3") == ["bytes=1234-"]
    assert not (tmp_path / "ep2.mp3.part").exists()


def test_restarts_when_server_ignores_range(tmp_path, server):
    (tmp_path / "norange.mp3.part").write_bytes(b"stale bytes from another file")
    got = fetch_source(f"{server}/norange.mp3", tmp_path, limits=LOCAL)
    assert got.path.read_bytes() == BODY


def test_retries_a_5xx_then_succeeds(tmp_path, server):
    got = fetch_source(f"{server}/flaky.mp3", tmp_path, limits=LOCAL, **FAST)
    assert got.path.read_bytes() == BODY
    assert len(requested("/flaky.mp3")) == 2


def test_gives_up_on_persistent_5xx_after_retries(tmp_path, server):
    with pytest.raises(FetchError, match=r"always500\.mp3: server error HTTP 503 .*4 attempts"):
        fetch_source(f"{server}/always500.mp3", tmp_path, limits=LOCAL, retries=3, **FAST)
    assert len(requested("/always500.mp3")) == 4


def test_404_is_not_retried(tmp_path, server):
    url = f"{server}/gone.mp3"
    with pytest.raises(FetchError, match=re.escape(url) + r": HTTP 404"):
        fetch_source(url, tmp_path, limits=LOCAL, **FAST)
    assert len(requested("/gone.mp3")) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("path", "media"), [("/page.mp3", "text/html"), ("/api.mp3", "application/json")]
)
def test_rejects_pages_posing_as_audio(tmp_path, server, path, media):
    url = f"{server}{path}"
    with pytest.raises(FetchError, match=re.escape(url) + f": server sent {media}, not audio"):
        fetch_source(url, tmp_path, limits=LOCAL, **FAST)
    assert list(tmp_path.iterdir()) == []
    assert len(requested(path)) == 1


def test_times_out_and_says_so(tmp_path, server):
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"slow\.mp3: timed out"):
        fetch_source(
            f"{server}/slow.mp3",
            tmp_path,
            limits=local(read_timeout_s=0.2),
            retries=1,
            **FAST,
        )
    assert time.monotonic() - started < 1.5
    assert len(requested("/slow.mp3")) == 2


def test_size_limit_from_content_length(tmp_path, server):
    with pytest.raises(FetchError, match=r"over the limit of 1000 bytes"):
        fetch_source(
            f"{server}/ep.mp3",
            tmp_path,
            limits=local(max_download_bytes=1000),
        )
    assert list(tmp_path.iterdir()) == []


def test_size_limit_while_streaming_without_length(tmp_path, server):
    with pytest.raises(FetchError, match=r"more than 1000 bytes"):
        fetch_source(
            f"{server}/nolength.mp3",
            tmp_path,
            limits=local(max_download_bytes=1000),
        )
    assert list(tmp_path.iterdir()) == []


def test_unreachable_url_is_one_line_naming_it(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}/ep.mp3"
    with pytest.raises(FetchError, match=re.escape(url) + r": connection failed") as info:
        fetch_source(url, tmp_path, limits=LOCAL, retries=1, **FAST)
    assert "\n" not in str(info.value)


def test_malformed_url_is_not_retried(tmp_path):
    with pytest.raises(FetchError, match=r"http:///x\.mp3: not a valid URL"):
        fetch_source("http:///x.mp3", tmp_path, **FAST)


def test_local_file_is_checked_not_copied(tmp_path, fixtures_dir):
    src = fixtures_dir / "speech.ogg"
    got = fetch_source(str(src), tmp_path / "dest")
    assert got.path == src.resolve() and got.origin == str(src)
    assert got.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    assert got.size_bytes == src.stat().st_size
    assert not (tmp_path / "dest").exists()


def test_local_file_errors(tmp_path):
    with pytest.raises(SourceError, match=r"audio file not found: .*nope\.mp3"):
        fetch_source(str(tmp_path / "nope.mp3"), tmp_path)
    with pytest.raises(SourceError, match=r"is not a file"):
        fetch_source(str(tmp_path), tmp_path)
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(SourceError, match=r"empty\.mp3 is empty \(0 bytes\)"):
        fetch_source(str(tmp_path / "empty.mp3"), tmp_path)


def test_episode_ids_are_stable_and_distinct(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ep = episode_id_for("shows/My Episode #12.mp3")
    assert re.fullmatch(r"my-episode-12-[0-9a-f]{8}", ep)
    assert episode_id_for(str(tmp_path / "shows" / "My Episode #12.mp3")) == ep  # same file
    assert episode_id_for("other/My Episode #12.mp3") != ep
    url_id = episode_id_for("https://cdn.example.com/feed/Ep%2012.mp3?token=1")
    assert re.fullmatch(r"ep-12-[0-9a-f]{8}", url_id)
    assert url_id == episode_id_for("https://cdn.example.com/feed/Ep%2012.mp3?token=1")
    digest = hashlib.sha256(str((tmp_path / "shows/My Episode #12.mp3").resolve()).encode())
    assert ep.endswith(digest.hexdigest()[:8])


def test_download_name_is_safe(tmp_path, server):
    got = fetch_source(f"{server}/ep.mp3?x=../../etc", tmp_path, limits=LOCAL)
    assert got.path.parent == tmp_path.resolve()
    assert Path(got.path).name == "ep.mp3"
