"""Reference transcripts: every publisher format and encoding reduces to the spoken words."""

import codecs
import hashlib
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipeline.core.errors import FetchError, ReferenceError
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import decode_reference, parse_reference_text, read_reference

# The test server is on 127.0.0.1, which podscribe refuses unless local networks are allowed.
LOCAL = FetchLimits(allow_private_networks=True)

SRT = """1
00:00:01,000 --> 00:00:03,500
<i>JOHN: Welcome</i> to the show.

2
00:00:04,000 --> 00:00:06,000
- Thanks for having me.
- {\\an8}Glad you're here.

"""

VTT = """WEBVTT - episode 12

NOTE This cue list was
made by hand.

STYLE
::cue { color: yellow }

intro-1
00:00.000 --> 00:02.500 align:start position:10%
<v Jane Doe>Welcome to the <b>show</b>.</v>

00:00:03.000 --> 00:00:05.000
<v.loud Bob>Rock &amp; roll<00:00:04.000> <c.yellow>forever</c>.
"""

PODCAST_JSON = """{
  "version": "1.0.0",
  "segments": [
    {"speaker": "Alice", "startTime": 0.5, "endTime": 0.9, "body": "Welcome"},
    {"speaker": "Alice", "startTime": 0.9, "endTime": 1.4, "body": "to the show."},
    {"speaker": "Bob", "startTime": 1.6, "endTime": 2.0, "body": "Thanks!"},
    {"startTime": 2.0, "endTime": 2.1}
  ]
}"""

HTML = """<!DOCTYPE html>
<html><head><title>Episode 12 transcript</title>
<style>p { margin: 0 }</style><script>var tracking = "do not read";</script></head>
<body>
<cite>Alice:</cite><time>0:00</time><p>Welcome &amp; hello.</p>
<cite>Bob:</cite><time>0:02</time><p>Thanks<br>again.</p>
</body></html>
"""

PLAIN = """[00:00:01] JOHN: Welcome to the show.
(01:05) Speaker 1: Thanks for having me.
[Host]: Let's begin.
00:01:10 Dr. Jane Doe: Hello.
So here's the thing: it works.
"""


# --- formats: (data, hint, expected text, expected format) ---------------------------------


@pytest.mark.parametrize(
    ("data", "hint", "expected_text", "expected_format"),
    [
        (SRT, "srt", "Welcome to the show.\nThanks for having me.\nGlad you're here.", "srt"),
        (SRT, None, "Welcome to the show.\nThanks for having me.\nGlad you're here.", "srt"),
        # Servers often call subtitles text/plain: the content decides.
        (SRT, "text/plain", "Welcome to the show.\nThanks for having me.\nGlad you're here.",
         "srt"),
        (SRT.replace("\n", "\r\n"), "srt",
         "Welcome to the show.\nThanks for having me.\nGlad you're here.", "srt"),
        (VTT, "text/vtt", "Welcome to the show.\nRock & roll forever.", "vtt"),
        (VTT, None, "Welcome to the show.\nRock & roll forever.", "vtt"),
        (PODCAST_JSON, "application/json", "Welcome to the show.\nThanks!", "json"),
        (PODCAST_JSON, None, "Welcome to the show.\nThanks!", "json"),
        (HTML, "text/html; charset=utf-8", "Welcome & hello.\nThanks\nagain.", "html"),
        (HTML, None, "Welcome & hello.\nThanks\nagain.", "html"),
        (PLAIN, "txt",
         "Welcome to the show.\nThanks for having me.\nLet's begin.\nHello.\n"
         "So here's the thing: it works.", "text"),
        ("  One   line\n\n\nAnother line  ", None, "One line\nAnother line", "text"),
    ],
)  # fmt: skip
def test_parse_formats(data: str, hint: str | None, expected_text: str, expected_format: str):
    assert parse_reference_text(data.encode("utf-8"), hint) == (expected_text, expected_format)


# --- encodings: (encoded bytes, expected encoding) -----------------------------------------

TEXT = "Café crème — it’s “naïve”.\nSecond line."


@pytest.mark.parametrize(
    ("data", "expected_encoding"),
    [
        (TEXT.encode("utf-8"), "utf-8"),
        (codecs.BOM_UTF8 + TEXT.encode("utf-8"), "utf-8-sig"),
        (TEXT.encode("utf-16"), "utf-16"),  # with a BOM
        (codecs.BOM_UTF16_BE + TEXT.encode("utf-16-be"), "utf-16"),
        (TEXT.encode("utf-16-le"), "utf-16-le"),  # no BOM: found from the NUL bytes
        (TEXT.encode("cp1252"), "cp1252"),
    ],
)
def test_decode_encodings(data: bytes, expected_encoding: str) -> None:
    assert decode_reference(data) == (TEXT, expected_encoding)


def test_latin1_text_reads_as_cp1252() -> None:
    """latin-1 and cp1252 agree on letters: the words come back whichever the file used."""
    text, _ = decode_reference("Olé, señor".encode("latin-1"))
    assert text == "Olé, señor"


def test_read_reference_from_file(tmp_path: Path) -> None:
    path = tmp_path / "ep.srt"
    data = SRT.encode("utf-16")
    path.write_bytes(data)
    ref = read_reference(path)
    assert ref.text == "Welcome to the show.\nThanks for having me.\nGlad you're here."
    assert (ref.format, ref.encoding, ref.origin) == ("srt", "utf-16", str(path))
    assert ref.sha256 == hashlib.sha256(data).hexdigest()
    assert ref.text_sha256 == hashlib.sha256(ref.text.encode()).hexdigest()


# --- errors: one line, naming the input ----------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    with pytest.raises(ReferenceError, match=f"reference file not found: {missing}"):
        read_reference(missing)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("empty.txt", b""),
        ("blank.txt", b"  \n\t\r\n "),
        ("bom-only.txt", codecs.BOM_UTF8),
        ("timings-only.srt", b"1\n00:00:01,000 --> 00:00:02,000\n\n"),
        ("header-only.vtt", b"WEBVTT\n\nNOTE nothing said\n"),
    ],
)
def test_empty_reference(tmp_path: Path, name: str, data: bytes) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ReferenceError, match="empty") as info:
        read_reference(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("data", "hint", "message"),
    [
        (b'{"version": "1.0.0", "segments": [', "json", "not valid JSON"),
        (b'{"version": "1.0.0"}', None, "no 'segments' list"),
    ],
)
def test_bad_json(data: bytes, hint: str | None, message: str) -> None:
    with pytest.raises(ReferenceError, match=message) as info:
        parse_reference_text(data, hint, name="feed.json")
    assert "feed.json" in str(info.value)


def test_folder_is_not_a_reference(tmp_path: Path) -> None:
    with pytest.raises(ReferenceError, match="folder"):
        read_reference(tmp_path)


# --- URLs: a real local server --------------------------------------------------------------


class _Handler(SimpleHTTPRequestHandler):
    """Serves files from a folder, plus a redirect and a slow path."""

    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/ep.vtt")
            self.end_headers()
            return
        if self.path == "/slow":
            time.sleep(1.0)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep test output clean


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[str]:
    """Base URL of an http.server on 127.0.0.1 serving tmp_path."""
    (tmp_path / "ep.vtt").write_text(VTT, encoding="utf-8")
    (tmp_path / "ep.json").write_text(PODCAST_JSON, encoding="utf-8")
    (tmp_path / "empty.txt").write_bytes(b"")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(tmp_path)))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_read_reference_from_url(server: str) -> None:
    ref = read_reference(f"{server}/ep.vtt", limits=LOCAL)
    assert (ref.text, ref.format) == ("Welcome to the show.\nRock & roll forever.", "vtt")
    assert ref.origin == f"{server}/ep.vtt"
    assert ref.sha256 == hashlib.sha256(VTT.encode()).hexdigest()


def test_url_redirect_is_followed(server: str) -> None:
    assert read_reference(f"{server}/moved", limits=LOCAL).format == "vtt"


def test_url_json(server: str) -> None:
    assert read_reference(f"{server}/ep.json", limits=LOCAL).text == "Welcome to the show.\nThanks!"


def test_url_404(server: str) -> None:
    url = f"{server}/missing.srt"
    with pytest.raises(FetchError, match="HTTP 404") as info:
        read_reference(url, limits=LOCAL)
    assert url in str(info.value)


def test_url_timeout(server: str) -> None:
    url = f"{server}/slow"
    with pytest.raises(FetchError, match="timed out") as info:
        read_reference(url, limits=FetchLimits(read_timeout_s=0.2, allow_private_networks=True))
    assert url in str(info.value)


def test_url_empty(server: str) -> None:
    url = f"{server}/empty.txt"
    with pytest.raises(ReferenceError, match="empty") as info:
        read_reference(url, limits=LOCAL)
    assert url in str(info.value)


def test_unreachable_url() -> None:
    # Port 9 (discard) on loopback: nothing listens, so the connection is refused at once.
    with pytest.raises(FetchError, match="127.0.0.1:9"):
        read_reference("http://127.0.0.1:9/ep.srt", limits=LOCAL)
