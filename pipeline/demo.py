"""A podcast feed of the bundled demo episodes, served over HTTP on 127.0.0.1.

Each episode's reference text is linked as a Podcasting 2.0 ``<podcast:transcript>``
(text/plain), so the demo reads feeds, downloads audio and fetches references the way a
real podcast is handled.
"""

from __future__ import annotations

import contextlib
import mimetypes
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

DEMO_DIR = Path(__file__).resolve().parent / "data" / "demo"
# Titles of episode-1..3 (real speech; provenance in data/demo/NOTICE.md).
DEMO_TITLES = (
    "Ask not: John F. Kennedy, 1961",
    "Sense and Sensibility, chapter 1 (LibriVox)",
    "The art of printing (LJ Speech)",
)
DEMO_FEED_PORT = 8765  # fixed, so the feed URL (and so the episode ids) stay the same per run
_PODCAST_NS = "https://podcastindex.org/namespace/1.0"


def demo_episodes() -> list[Path]:
    """The bundled demo episode audio files (each has a .txt reference beside it)."""
    return sorted(DEMO_DIR.glob("episode-*.mp3"))


def demo_title(n: int) -> str:
    """The title of demo episode ``n`` (from 1)."""
    return DEMO_TITLES[n - 1] if 1 <= n <= len(DEMO_TITLES) else f"Demo episode {n}"


def demo_feed_xml(base_url: str) -> bytes:
    """An RSS 2.0 feed of the demo episodes whose files live under ``base_url``."""
    items = []
    for n, audio in enumerate(demo_episodes(), start=1):
        audio_url, text_url = f"{base_url}/{audio.name}", f"{base_url}/{audio.stem}.txt"
        items.append(
            f"<item><title>{escape(demo_title(n))}</title>"
            f'<guid isPermaLink="false">podscribe-demo-'
            f"{audio.stem}</guid><pubDate>Mon, 0{n} Jun 2025 10:00:00 GMT</pubDate>"
            f'<enclosure url={quoteattr(audio_url)} type="audio/mpeg" '
            f'length="{audio.stat().st_size}"/><podcast:transcript url={quoteattr(text_url)} '
            f'type="text/plain" language="en"/></item>'
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" xmlns:podcast='
        f'"{_PODCAST_NS}"><channel><title>{escape("podscribe demo")}</title>'
        f"<link>{escape(base_url)}</link><description>Bundled demo episodes</description>"
        f"{''.join(items)}</channel></rss>"
    ).encode()


class _Handler(BaseHTTPRequestHandler):
    base_url = ""

    def do_GET(self) -> None:
        name = self.path.split("?")[0].lstrip("/")
        path = DEMO_DIR / name
        if name == "feed.xml":
            body, kind = demo_feed_xml(self.base_url), "application/rss+xml"
        elif "/" not in name and path.suffix in (".mp3", ".txt") and path.is_file():
            body = path.read_bytes()
            kind = (
                "text/plain; charset=utf-8"
                if path.suffix == ".txt"
                else (mimetypes.guess_type(path.name)[0] or "audio/mpeg")
            )
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_demo_feed(port: int = DEMO_FEED_PORT) -> Iterator[str]:
    """Serve the demo feed on 127.0.0.1 (``port``, or any free port if it is taken); yield
    the feed's URL."""
    try:
        httpd = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    except OSError:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.RequestHandlerClass = type("Handler", (_Handler,), {"base_url": base_url})
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.1,), daemon=True)
    thread.start()
    try:
        yield f"{base_url}/feed.xml"
    finally:
        httpd.shutdown()
        httpd.server_close()
