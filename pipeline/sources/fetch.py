"""Get an episode's audio onto local disk: a local file as it is, or a URL downloaded with resume.

Downloads stream to ``<name>.part`` and are renamed when complete, so a half download is never
mistaken for an episode; a ``<name>.sha256.json`` sidecar written after the rename marks the file
as complete and lets a re-run skip the download. Only http(s) URLs are fetched, through
``pipeline.sources.net`` (address checks, size and total-time limits from ``FetchLimits``).
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from pipeline.core.errors import FetchError, SourceError
from pipeline.core.store import read_json, sha256_file, slugify, write_json_atomic
from pipeline.core.types import SourceAudio
from pipeline.sources.net import FetchLimits, NetSession, check_url, over_limit

DEFAULT_RETRIES = 3  # extra attempts after the first, for transient failures only
DEFAULT_BACKOFF_S = 1.0  # seconds before the first retry; doubles each time
# Types a server sends for error pages and APIs: never an episode, whatever the URL ends with.
_NOT_AUDIO_TYPES = ("text/", "application/json", "application/xhtml+xml")
_SIDECAR_SUFFIX = ".sha256.json"


class _Transient(Exception):
    """A failure worth retrying (timeout, dropped connection, 5xx); carries a one-line reason."""


def episode_id_for(source: str) -> str:
    """Stable id for a source: slug of its file stem + 8 hex of sha256(absolute path or URL)."""
    if _is_url(source):
        stem = Path(unquote(urlparse(source).path)).stem
        key = source
    else:
        try:
            path = Path(source).expanduser().resolve()
        except (ValueError, OSError, RuntimeError):  # NUL, a loop, "~nobody": still an id
            path = Path(os.path.abspath(source))
        stem, key = path.stem, str(path)
    return f"{slugify(stem)}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:8]}"


def fetch_source(
    source: str,
    dest_dir: Path,
    *,
    limits: FetchLimits | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> SourceAudio:
    """Return the episode audio at ``source`` (a local path or an http(s) URL) as a local file.

    A local file is checked, not copied. A URL is downloaded into ``dest_dir`` (resuming a
    ``.part`` file, retrying transient failures with exponential backoff) within ``limits``,
    unless a completed download with a matching checksum sidecar is already there. Any other
    scheme (``file://``, ``ftp://`` ...) is refused.
    """
    if _is_url(source):
        return _fetch_url(source, Path(dest_dir), limits or FetchLimits(), retries, backoff_s)
    if _has_scheme(source):
        check_url(source)  # raises: a scheme that is not http(s)
    return _check_local(source)


def _is_url(source: str) -> bool:
    return urlparse(source).scheme.lower() in ("http", "https")


def _has_scheme(source: str) -> bool:
    # "C:\x.mp3" parses with scheme "c": a one-letter scheme is a Windows drive, not a URL.
    return len(urlparse(source).scheme) > 1 or source.lower().startswith("file:")


def _check_local(source: str) -> SourceAudio:
    try:
        path = Path(source).expanduser()
        exists = path.exists()
    except (ValueError, OSError, RuntimeError) as exc:  # NUL, a name too long, "~nobody"
        raise SourceError(f"not a usable file path: {source!r} ({exc})") from None
    if not exists:
        raise SourceError(f"audio file not found: {source}")
    if not path.is_file():
        raise SourceError(f"{source} is not a file (give the path of an audio file)")
    size = path.stat().st_size
    if size == 0:
        raise SourceError(f"{source} is empty (0 bytes): nothing to transcribe; check the file")
    return SourceAudio(
        path=path.resolve(),
        origin=source,
        sha256=sha256_file(path),
        size_bytes=size,
        content_type=mimetypes.guess_type(path.name)[0],
    )


def _file_name_for(url: str) -> str:
    """A safe local file name for a URL: its last path segment, slugified, extension kept."""
    name = Path(unquote(urlparse(url).path)).name
    stem, suffix = os.path.splitext(name)
    suffix = suffix.lower() if suffix[1:].isalnum() and len(suffix) <= 6 else ""
    return f"{slugify(stem)}{suffix}"


def _fetch_url(
    url: str, dest_dir: Path, limits: FetchLimits, retries: int, backoff_s: float
) -> SourceAudio:
    dest = dest_dir / _file_name_for(url)
    done = _reuse_download(dest, url)
    if done is not None:
        return done
    dest_dir.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    attempts = retries + 1
    # One total deadline for the download, retries included (PODSCRIBE_DOWNLOAD_TIMEOUT_S).
    with NetSession(limits, limits.download_timeout_s, "download_timeout_s") as session:
        for attempt in range(attempts):
            try:
                content_type = _download_once(session, url, part, limits.max_download_bytes)
                break
            except _Transient as e:
                if attempt + 1 == attempts:
                    raise FetchError(
                        f"cannot download {url}: {e} (gave up after {attempts} attempts)"
                    ) from e
                time.sleep(backoff_s * 2**attempt)

    sha = sha256_file(part)
    size = part.stat().st_size
    os.replace(part, dest)
    record = {"url": url, "sha256": sha, "size_bytes": size, "content_type": content_type}
    write_json_atomic(_sidecar(dest), record)
    return SourceAudio(
        path=dest.resolve(), origin=url, sha256=sha, size_bytes=size, content_type=content_type
    )


def _download_once(session: NetSession, url: str, part: Path, max_bytes: int) -> str | None:
    """One attempt: stream ``url`` into ``part``, resuming it if the server allows.

    Returns the content type. Raises _Transient for retryable failures, FetchError otherwise.
    """
    offset = part.stat().st_size if part.exists() else 0
    # identity: byte offsets for resuming must count the file's bytes, not a compressed form.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        with session.get(url, headers=headers) as response:
            if response.status_code == 416 and offset:
                # The .part no longer matches what the server has (the file changed, or the
                # .part is complete but unrecorded): drop it and fetch the whole file again.
                part.unlink(missing_ok=True)
                raise _Transient("server refused to resume (HTTP 416)")
            content_type = _check_response(url, response, offset, max_bytes)
            if response.status_code == 206 and not _range_starts_at(response, offset):
                part.unlink(missing_ok=True)  # a range we did not ask for: start over
                raise _Transient("server sent the wrong byte range")
            if response.status_code != 206:
                offset = 0  # the server sent the whole file: start the .part again
            _stream_body(session, url, response, part, offset, max_bytes)
            return content_type
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as e:
        raise FetchError(f"cannot download {url}: not a valid URL ({e})") from e
    except httpx.TimeoutException as e:
        raise _Transient(f"timed out ({type(e).__name__})") from e
    except httpx.TransportError as e:
        raise _Transient(f"connection failed ({e or type(e).__name__})") from e


def _check_response(url: str, response: httpx.Response, offset: int, max_bytes: int) -> str | None:
    """Status, content type and announced size checks, before any byte is written."""
    status = response.status_code
    if status >= 500:
        raise _Transient(f"server error HTTP {status}")
    if status >= 400:
        raise FetchError(f"cannot download {url}: HTTP {status} {response.reason_phrase}")
    if status not in (200, 206):
        raise FetchError(f"cannot download {url}: unexpected HTTP {status}")

    content_type = response.headers.get("content-type")
    media = (content_type or "").split(";")[0].strip().lower()
    if media.startswith(_NOT_AUDIO_TYPES):
        raise FetchError(
            f"cannot download {url}: server sent {media}, not audio "
            "(an error or login page? check the URL)"
        )
    length = response.headers.get("content-length")
    if length and length.isdigit():
        total = int(length) + (offset if status == 206 else 0)
        if total > max_bytes:
            raise over_limit(url, total, max_bytes, "max_download_bytes")
    return content_type


def _stream_body(
    session: NetSession, url: str, response: httpx.Response, part: Path, offset: int, max_bytes: int
) -> None:
    """Append (after a 206) or write (after a 200) the body to ``part``, enforcing max_bytes."""
    received = offset
    with open(part, "ab" if offset else "wb") as f:
        # Blocks as they arrive (no re-chunking buffer), so every byte received before a dropped
        # connection is already in the .part file and the resume starts right after it.
        for block in session.iter_bytes(response, url):
            received += len(block)
            if received > max_bytes:
                f.close()
                part.unlink(missing_ok=True)
                raise over_limit(url, None, max_bytes, "max_download_bytes")
            f.write(block)


def _range_starts_at(response: httpx.Response, offset: int) -> bool:
    """True when a 206's Content-Range ("bytes START-END/TOTAL") starts at ``offset``."""
    content_range = response.headers.get("content-range", "")
    unit, _, spec = content_range.partition(" ")
    start = spec.split("-", 1)[0]
    return unit.lower() == "bytes" and start.isdigit() and int(start) == offset


def _sidecar(dest: Path) -> Path:
    return dest.with_name(dest.name + _SIDECAR_SUFFIX)


def _reuse_download(dest: Path, url: str) -> SourceAudio | None:
    """The completed download at ``dest``, if its sidecar checksum still matches the file."""
    sidecar = _sidecar(dest)
    if not (dest.is_file() and sidecar.is_file()):
        return None
    try:
        record = read_json(sidecar)
    except (OSError, ValueError):
        return None
    if record.get("url") != url or record.get("size_bytes") != dest.stat().st_size:
        return None
    if record.get("sha256") != sha256_file(dest):
        return None
    return SourceAudio(
        path=dest.resolve(),
        origin=url,
        sha256=record["sha256"],
        size_bytes=record["size_bytes"],
        content_type=record.get("content_type"),
    )
