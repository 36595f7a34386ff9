"""Hostile names, texts, feeds and servers: each is refused with one clear line, or made safe.

Network traffic goes to 127.0.0.1 only. Private and link-local targets are tested without
connecting: names resolve through ``pipeline.sources.net.resolve_host`` patched to answer 10.x /
169.254.x / 192.168.x, and ``socket.socket.connect`` is guarded so that a broken refusal fails the
test instead of reaching the network.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import LocalHTTPServer, Reply
from feedgen import Item, rss

from pipeline.core.errors import (
    FeedError,
    FetchError,
    OptionsError,
    ReferenceError,
    SourceError,
    UnsafeURLError,
)
from pipeline.core.store import check_episode_id, episode_dir
from pipeline.episode import prepare_episode
from pipeline.settings import Settings, fetch_limits, load_settings
from pipeline.sources import net
from pipeline.sources.feed import fetch_episode_reference, fetch_feed, parse_feed
from pipeline.sources.fetch import episode_id_for, fetch_source
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import read_reference

ROOT = Path(__file__).resolve().parent.parent
LOCAL = FetchLimits(allow_private_networks=True, read_timeout_s=5.0)
FAST = {"retries": 0, "backoff_s": 0.01}


def local(**limits: object) -> FetchLimits:
    """LOCAL with some limits changed."""
    return FetchLimits(**{"allow_private_networks": True, **limits})  # type: ignore[arg-type]


def _cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The pipeline CLI as a user runs it (no Prefect import: fast)."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli.app", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "COLUMNS": "300",
            "NO_COLOR": "1",
            **(env or {}),
        },
    )


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    return lines[0]


# --- names and ids ---------------------------------------------------------------------------

UNSAFE_IDS = ["../../escape", "..", ".", "a/b", "a\\b", "a\x00b", "", "x" * 300, "-rf", "épisode"]


@pytest.mark.parametrize("episode_id", UNSAFE_IDS)
def test_unsafe_episode_ids_are_refused(episode_id: str, tmp_path: Path) -> None:
    with pytest.raises(OptionsError, match="is not safe as a folder name"):
        episode_dir(tmp_path, episode_id)
    if not episode_id:
        return  # prepare_episode takes "" as "not given" and derives an id from the source
    # prepare_episode (the flow's prepare task, the CLI) refuses before writing anything.
    with pytest.raises(OptionsError, match="is not safe as a folder name"):
        prepare_episode("http://127.0.0.1:9/never.mp3", episode_id, tmp_path / "audio")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("episode_id", ["demo-episode-1", "ep_1.v2", "A" * 128])
def test_safe_episode_ids_are_kept(episode_id: str) -> None:
    assert check_episode_id(episode_id) == episode_id


def test_cli_refuses_episode_id_escape(tmp_path: Path, fixtures_dir: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    done = _cli(
        "transcribe",
        str(fixtures_dir / "episode.mp3"),
        "--episode-id",
        "../../escape",
        "--audio-root",
        "A",
        cwd=work,
    )
    line = _one_error_line(done)
    assert line == (
        "error: episode id '../../escape' is not safe as a folder name: use 1-128 letters, "
        "digits, '.', '_' or '-', starting with a letter or digit"
    )
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["work"]  # nothing made, anywhere


HOSTILE_NAMES = [
    "../../etc/passwd",
    "a/b",
    "..",
    "C:\\Windows\\x",
    "Épisode naïve — 日本語 🎙",
    "x" * 300,
    "a\tb",
    "",
]


def test_feed_item_ids_are_safe_unique_and_stable() -> None:
    items = [
        Item(name.replace("&", "and") or "t", name or None, (f"http://e.org/{i}.mp3", "audio/mpeg"))
        for i, name in enumerate(HOSTILE_NAMES)
    ]
    items += [
        Item(n, f"same-title-{i}", (f"http://e.org/s{i}.mp3", "audio/mpeg"))
        for i, n in enumerate(["a/b", "a?b", "a b"])
    ]
    from xml.sax.saxutils import escape

    items = [
        Item(escape(it.title), escape(it.guid) if it.guid else None, it.enclosure) for it in items
    ]
    first = parse_feed(rss("../../Show/..", items), "http://e.org/feed")
    again = parse_feed(rss("../../Show/..", items), "http://e.org/feed")
    ids = [e.episode_id for e in first.episodes]
    assert len(ids) == len(items) == len(set(ids))
    assert ids == [e.episode_id for e in again.episodes]
    for episode_id in [*ids, first.feed_id]:
        assert check_episode_id(episode_id) == episode_id
        assert len(episode_id) <= 60


@pytest.mark.parametrize(
    "source", ["a\x00b.mp3", "~0/x.mp3", "../../x.mp3", "/tmp/" + "y" * 300 + ".mp3"]
)
def test_source_ids_are_safe(source: str) -> None:
    assert check_episode_id(episode_id_for(source))


def test_source_path_with_nul_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="audio file not found: a\x00b.mp3"):
        fetch_source("a\x00b.mp3", tmp_path)


# --- references ------------------------------------------------------------------------------


def _make_reference(kind: str, tmp_path: Path, fixtures_dir: Path) -> Path:
    path = tmp_path / f"ref-{kind}.txt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "binary":
        path.write_bytes((fixtures_dir / "episode.mp3").read_bytes())
    elif kind == "50MB":
        with open(path, "wb") as f:
            f.truncate(50 * 1024 * 1024)  # sparse: refused by size before it is read
    elif kind == "utf-16":
        path.write_bytes("Ça va très bien, merci.".encode("utf-16"))
    elif kind == "latin-1":
        path.write_bytes("Ça va très bien, naïve café.".encode("latin-1"))
    return path


REFERENCES = [
    ("empty", ReferenceError, "is empty: it holds no text"),
    ("binary", ReferenceError, "is binary data, not text"),
    (
        "50MB",
        ReferenceError,
        "is 52428800 bytes, over the limit of 20971520 bytes for a transcript",
    ),
    ("utf-16", None, "Ça va très bien, merci."),
    ("latin-1", None, "Ça va très bien, naïve café."),
]


@pytest.mark.parametrize(("kind", "error", "expected"), REFERENCES)
def test_bad_references(kind, error, expected, tmp_path: Path, fixtures_dir: Path) -> None:
    path = _make_reference(kind, tmp_path, fixtures_dir)
    if error is None:
        assert read_reference(path).text == expected
    else:
        with pytest.raises(error, match=re.escape(expected)):
            read_reference(path)


def test_cli_refuses_binary_reference(tmp_path: Path, fixtures_dir: Path) -> None:
    transcript = tmp_path / "hyp.txt"
    transcript.write_text("hello world\n")
    done = _cli("score", str(transcript), str(fixtures_dir / "episode.mp3"), cwd=tmp_path)
    assert "is binary data, not text" in _one_error_line(done)


# --- hostile XML -----------------------------------------------------------------------------


def test_billion_laughs_is_refused() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">'
    for level in range(1, 10):
        name, below = "abcdefghij"[level], "abcdefghij"[level - 1]
        bomb += f'<!ENTITY {name} "{("&" + below + ";") * 10}">'.encode()
    bomb += b']><rss version="2.0"><channel><title>&j;</title></channel></rss>'
    started = time.monotonic()
    with pytest.raises(FeedError, match="declares XML entities.*refusing it as unsafe"):
        parse_feed(bomb, "http://x/bomb")
    # Refused before any expansion: expanding would take minutes and gigabytes. The bound
    # is loose (shared machines swing 3x); the message says which check fired.
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("encoding", ["utf-8", "utf-16"])
def test_external_entity_is_refused(encoding: str, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = (
        f'<?xml version="1.0" encoding="{encoding}"?><!DOCTYPE rss [<!ENTITY x SYSTEM '
        f'"file://{secret}">]><rss version="2.0"><channel><title>&x;</title><item>'
        '<enclosure url="http://e.org/a.mp3" type="audio/mpeg"/></item></channel></rss>'
    ).encode(encoding)
    with pytest.raises(FeedError, match="unsafe|entity declarations") as info:
        parse_feed(xxe, "http://x/xxe")
    assert "TOP-SECRET" not in str(info.value)


def test_external_dtd_is_not_fetched(http_server: LocalHTTPServer) -> None:
    dtd = http_server.route("/evil.dtd", b'<!ENTITY t "pwned">')
    feed = (
        f'<?xml version="1.0"?><!DOCTYPE rss SYSTEM "{dtd}"><rss version="2.0"><channel>'
        '<title>T</title><item><title>E</title><enclosure url="http://e.org/a.mp3" '
        'type="audio/mpeg"/></item></channel></rss>'
    ).encode()
    parsed = parse_feed(feed, "http://x/dtd")
    assert parsed.title == "T" and http_server.hits["/evil.dtd"] == 0


@pytest.mark.parametrize("bad", ["file:///etc/passwd", "/etc/passwd", "ftp://e.org/a.mp3"])
def test_feed_cannot_point_at_local_files(bad: str) -> None:
    items = [
        Item("Local", "g1", (bad, "audio/mpeg")),
        Item("Web", "g2", ("http://e.org/a.mp3", "audio/mpeg"), transcripts=((bad, "text/plain"),)),
    ]
    feed = parse_feed(rss("S", items), "http://x/feed")
    assert [e.guid for e in feed.episodes] == ["g2"]
    assert feed.episodes[0].transcripts == ()
    assert feed.skipped == (("Local", f"enclosure {bad!r} is not an http(s) URL"),)


# --- feeds too large -------------------------------------------------------------------------


def test_50mb_feed_is_stopped_at_the_limit(http_server: LocalHTTPServer) -> None:
    big = b"<rss>" + b" " * (50 * 1024 * 1024)
    url = http_server.route("/big.xml", Reply(big, content_type="application/rss+xml"))
    with pytest.raises(FeedError) as info:
        fetch_feed(url, limits=LOCAL, **FAST)
    assert str(info.value) == (
        f"cannot fetch {url}: 52428805 bytes, over the limit of 20971520 bytes "
        "(raise PODSCRIBE_MAX_FEED_BYTES if this is expected)"
    )


def test_feed_without_length_is_counted(http_server: LocalHTTPServer) -> None:
    url = http_server.route("/nolen.xml", Reply(b"<rss>" + b" " * 300_000, content_length=None))
    with pytest.raises(FeedError, match=r"more than 100000 bytes, over the limit of 100000 bytes"):
        fetch_feed(url, limits=local(max_feed_bytes=100_000), **FAST)


def test_large_local_feed_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(b"<rss>" + b" " * 2000)
    with pytest.raises(FeedError, match=r"is 2005 bytes, over the limit of 1000 bytes"):
        fetch_feed(str(path), limits=FetchLimits(max_feed_bytes=1000))


def test_10000_items_are_capped(caplog: pytest.LogCaptureFixture) -> None:
    items = [Item(f"E{i}", f"g{i}", (f"http://e.org/{i}.mp3", "audio/mpeg")) for i in range(10_000)]
    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        feed = parse_feed(rss("Huge", items), "http://x/huge", max_items=5000)
    assert time.monotonic() - started < 30
    assert len(feed.episodes) == 5000 and feed.items_ignored == 5000
    assert feed.episodes[-1].guid == "g4999"
    assert (
        "read the first 5000 items and ignored 5000 more (the limit is PODSCRIBE_MAX_FEED_ITEMS)"
        in caplog.text
    )


# --- schemes, redirects ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://e.org/a.mp3", "gopher://e.org/1", "data:,x"]
)
def test_other_schemes_are_refused(url: str, tmp_path: Path) -> None:
    with pytest.raises(UnsafeURLError, match=r"only http and https URLs are fetched"):
        fetch_source(url, tmp_path)
    with pytest.raises(FeedError, match=r"only http\(s\) URLs or local file paths"):
        fetch_feed(url)
    with pytest.raises(ReferenceError, match=r"give an http\(s\) URL or a local file path"):
        read_reference(url)


def test_redirect_loop(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    a, b = http_server.url("/a.mp3"), http_server.url("/b.mp3")
    http_server.route("/a.mp3", Reply(status=302, headers=(("Location", b),)))
    http_server.route("/b.mp3", Reply(status=302, headers=(("Location", a),)))
    with pytest.raises(
        FetchError, match=rf"cannot fetch {re.escape(a)}: redirect loop \(back to {re.escape(a)}\)"
    ):
        fetch_source(a, tmp_path, limits=LOCAL, **FAST)
    assert http_server.hits["/a.mp3"] == 1 and http_server.hits["/b.mp3"] == 1
    with pytest.raises(FeedError, match="redirect loop"):
        fetch_feed(a, limits=LOCAL, **FAST)


def test_too_many_redirects(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    for i in range(10):
        http_server.route(f"/r{i}", Reply(status=301, headers=(("Location", f"/r{i + 1}"),)))
    with pytest.raises(
        FetchError, match=r"more than 5 redirects \(the limit is PODSCRIBE_MAX_REDIRECTS\)"
    ):
        fetch_source(http_server.url("/r0"), tmp_path, limits=LOCAL, **FAST)
    assert http_server.hits["/r6"] == 0


def test_redirect_to_file_scheme_is_refused(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    url = http_server.route(
        "/x.mp3", Reply(status=302, headers=(("Location", "file:///etc/passwd"),))
    )
    with pytest.raises(
        UnsafeURLError, match=r"refusing file://[^ ]*/etc/passwd: only http and https"
    ):
        fetch_source(url, tmp_path, limits=LOCAL, **FAST)
    assert list(tmp_path.iterdir()) == []


# --- private and link-local addresses (never connected to) -----------------------------------

FAKE_DNS = {
    "internal.example": ["10.1.2.3"],
    "metadata.example": ["169.254.169.254"],
    "router.example": ["192.168.1.1"],
    "ula.example": ["fd00::1"],
    "mapped.example": ["::ffff:10.0.0.1"],
    "mixed.example": ["93.184.216.34", "10.0.0.7"],  # one bad address is enough to refuse
    "loopback.example": ["127.0.0.1"],
}


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Names of FAKE_DNS resolve as listed; every connect to a non-loopback address fails the
    test before it is made. Returns the list of addresses connected to."""
    real_resolve = net.resolve_host
    real_connect = socket.socket.connect
    connected: list[tuple] = []

    def resolve(host: str, port: int) -> list[str]:
        return FAKE_DNS.get(host) or real_resolve(host, port)

    def guarded_connect(sock: socket.socket, address: tuple) -> None:
        if not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"test tried to connect to {address}: the refusal is broken")
        connected.append(address)
        real_connect(sock, address)

    monkeypatch.setattr(net, "resolve_host", resolve)
    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    return connected


@pytest.mark.parametrize(
    ("host", "address", "kind"),
    [
        ("internal.example", "10.1.2.3", "private"),
        ("metadata.example", "169.254.169.254", "link-local"),
        ("router.example", "192.168.1.1", "private"),
        ("ula.example", "fd00::1", "private"),
        ("mapped.example", "::ffff:10.0.0.1", "private"),
        ("mixed.example", "10.0.0.7", "private"),
        ("loopback.example", "127.0.0.1", "loopback"),
    ],
)
def test_private_addresses_are_refused_before_connecting(
    fake_dns: list, host: str, address: str, kind: str, tmp_path: Path
) -> None:
    expected = (
        f"refusing http://{host}/ep.mp3: host {host} resolves to {address}, a {kind} address "
        "(set PODSCRIBE_ALLOW_PRIVATE_NETWORKS=true, or list it in PODSCRIBE_ALLOWED_NETWORKS, "
        "to fetch from local networks)"
    )
    with pytest.raises(UnsafeURLError) as info:
        fetch_source(f"http://{host}/ep.mp3", tmp_path, **FAST)
    assert str(info.value) == expected
    with pytest.raises(FeedError, match=re.escape(f"resolves to {address}, a {kind} address")):
        fetch_feed(f"http://{host}/feed.xml", **FAST)
    with pytest.raises(FetchError, match=re.escape(f"resolves to {address}, a {kind} address")):
        read_reference(f"http://{host}/ref.vtt")
    assert fake_dns == [] and list(tmp_path.iterdir()) == []


def test_transcript_link_to_private_address_gives_no_reference(fake_dns: list) -> None:
    items = [
        Item(
            "E",
            "g",
            ("http://e.org/a.mp3", "audio/mpeg"),
            (("http://metadata.example/t.vtt", "text/vtt"),),
        )
    ]
    episode = parse_feed(rss("S", items), "http://x/feed").episodes[0]
    assert fetch_episode_reference(episode) is None and fake_dns == []


def test_redirect_to_private_address_is_refused(
    fake_dns: list, http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    # The first hop (127.0.0.1) is allowed by name; the redirect target resolves to 10.x.
    url = http_server.route(
        "/ep.mp3", Reply(status=302, headers=(("Location", "http://internal.example/ep.mp3"),))
    )
    limits = FetchLimits(allowed_networks=("127.0.0.1/32",))
    with pytest.raises(
        UnsafeURLError,
        match=r"refusing http://internal.example/ep.mp3: host internal.example resolves to 10\.1",
    ):
        fetch_source(url, tmp_path, limits=limits, **FAST)
    assert http_server.hits["/ep.mp3"] == 1
    assert {a[0] for a in fake_dns} == {"127.0.0.1"}


def test_loopback_is_refused_by_default_and_allowed_by_setting(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    url = http_server.route(
        "/feed.xml", rss("S", [Item("E", "g", ("http://e.org/a.mp3", "audio/mpeg"))])
    )
    env = {"PODSCRIBE_ALLOW_PRIVATE_NETWORKS": "false"}
    db = str(tmp_path / "c.db")
    refused = _cli("feed", "add", url, "--db", db, cwd=tmp_path, env=env)
    assert (
        "resolves to 127.0.0.1, a loopback address (set PODSCRIBE_ALLOW_PRIVATE_NETWORKS=true"
        in _one_error_line(refused)
    )
    assert http_server.hits["/feed.xml"] == 0
    allowed = _cli(
        "feed",
        "add",
        url,
        "--db",
        db,
        cwd=tmp_path,
        env={"PODSCRIBE_ALLOW_PRIVATE_NETWORKS": "true"},
    )
    assert allowed.returncode == 0, allowed.stderr
    assert "1 episodes, 1 new" in allowed.stdout


# --- lying and slow servers ------------------------------------------------------------------


def test_content_length_shorter_than_body(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    # The server says 100 bytes and sends 5000: podscribe reads the 100 HTTP promised, no more.
    url = http_server.route(
        "/short.mp3", Reply(b"A" * 5000, content_type="audio/mpeg", content_length=100)
    )
    got = fetch_source(url, tmp_path, limits=local(max_download_bytes=1000), **FAST)
    assert got.size_bytes == 100 and got.path.read_bytes() == b"A" * 100


def test_content_length_longer_than_body(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    url = http_server.route(
        "/long.mp3", Reply(b"A" * 100, content_type="audio/mpeg", content_length=5000)
    )
    with pytest.raises(
        FetchError,
        match=r"connection failed \(peer closed connection without sending complete message body",
    ):
        fetch_source(url, tmp_path, limits=LOCAL, **FAST)
    assert not (tmp_path / "long.mp3").exists()  # only a .part, which a re-run resumes


def test_content_length_over_the_limit_is_refused_before_the_body(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    url = http_server.route(
        "/huge.mp3", Reply(b"A" * 10, content_type="audio/mpeg", content_length=3_000_000_000)
    )
    with pytest.raises(FetchError) as info:
        fetch_source(url, tmp_path, limits=LOCAL, **FAST)
    assert str(info.value) == (
        f"cannot fetch {url}: 3000000000 bytes, over the limit of 2000000000 bytes "
        "(raise PODSCRIBE_MAX_DOWNLOAD_BYTES if this is expected)"
    )
    assert list(tmp_path.iterdir()) == []


def test_download_over_the_limit_is_stopped_and_removed(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    url = http_server.route(
        "/big.mp3", Reply(b"A" * 200_000, content_type="audio/mpeg", content_length=None)
    )
    with pytest.raises(
        FetchError,
        match=r"more than 50000 bytes, over the limit of 50000 bytes \(raise PODSCRIBE_MAX_DOWN",
    ):
        fetch_source(url, tmp_path, limits=local(max_download_bytes=50_000), **FAST)
    assert list(tmp_path.iterdir()) == []


def test_byte_a_second_server_hits_the_total_time_limit(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    # Each byte arrives well within the read timeout: only a total limit stops this.
    url = http_server.route("/drip.mp3", Reply(b"A" * 1000, content_type="audio/mpeg", drip_s=0.2))
    started = time.monotonic()
    with pytest.raises(FetchError) as info:
        fetch_source(url, tmp_path, limits=local(read_timeout_s=5, download_timeout_s=1.5), **FAST)
    assert time.monotonic() - started < 20  # without the total limit: 1000 bytes x 0.2 s = 200 s
    assert str(info.value) == (
        f"cannot fetch {url}: took longer than 1.5 s in total "
        "(the limit is PODSCRIBE_DOWNLOAD_TIMEOUT_S)"
    )
    feed = http_server.route("/drip.xml", Reply(b"<rss>" + b" " * 1000, drip_s=0.2))
    started = time.monotonic()
    with pytest.raises(
        FeedError,
        match=r"took longer than 1 s in total \(the limit is PODSCRIBE_REQUEST_TIMEOUT_S\)",
    ):
        fetch_feed(feed, limits=local(read_timeout_s=5, request_timeout_s=1), **FAST)
    assert time.monotonic() - started < 20  # without it: 200 s


def test_slow_headers_hit_the_total_time_limit(
    http_server: LocalHTTPServer, tmp_path: Path
) -> None:
    # The server waits longer than the total limit before any header: the socket is shut.
    url = http_server.route("/late.mp3", Reply(b"A", content_type="audio/mpeg", delay_s=3))
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"took longer than 1 s in total"):
        fetch_source(url, tmp_path, limits=local(read_timeout_s=10, download_timeout_s=1), **FAST)
    assert time.monotonic() - started < 2.5


# --- limits as settings ----------------------------------------------------------------------


def test_every_limit_is_a_setting() -> None:
    names = {f for f in FetchLimits.__dataclass_fields__}
    assert names <= set(Settings.model_fields)
    assert fetch_limits(load_settings()) == FetchLimits(allow_private_networks=True)  # conftest


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PODSCRIBE_MAX_FEED_ITEMS": "0"},
            "PODSCRIBE_MAX_FEED_ITEMS: Input should be greater than 0",
        ),
        (
            {"PODSCRIBE_READ_TIMEOUT_S": "soon"},
            "PODSCRIBE_READ_TIMEOUT_S: Input should be a valid number",
        ),
        (
            {"PODSCRIBE_ALLOWED_NETWORKS": "10.0.0.0/33"},
            "PODSCRIBE_ALLOWED_NETWORKS: ('10.0.0.0/33',) is not a list of networks",
        ),
    ],
)
def test_bad_limit_settings(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(OptionsError, match=re.escape(message)):
        fetch_limits(load_settings())


@pytest.mark.parametrize("field", ["read_timeout_s", "max_feed_items", "max_download_bytes"])
def test_fetch_limits_are_validated(field: str) -> None:
    with pytest.raises(OptionsError, match=f"PODSCRIBE_{field.upper()} must be a positive number"):
        FetchLimits(**{field: 0})
