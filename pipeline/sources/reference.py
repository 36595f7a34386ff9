"""Read a publisher's reference transcript (file or URL) into plain text for scoring.

Publishers ship transcripts as plain text, SRT, WebVTT, Podcasting 2.0 JSON or HTML, in
UTF-8, UTF-16 or a Windows code page. Whatever the format, the text is the spoken words only,
one cue or paragraph per line: cue numbers, timings, speaker labels, markup and timestamps are
removed, because none of them is in a Whisper transcript and every one would count as an error.
The speaker labels are kept beside the text, as turns ("Host: …" lines, ``call1-agent: …``
lines, WebVTT ``<v Name>`` tags, Podcasting 2.0 JSON ``speaker``, HTML ``<cite>``), for the
speaker-attributed scores.
"""

from __future__ import annotations

import codecs
import hashlib
import html
import json
import re
from collections import Counter
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from pipeline.core.errors import FetchError, ReferenceError
from pipeline.core.store import sha256_text
from pipeline.core.types import SpeakerTurn
from pipeline.sources.net import FetchLimits, NetSession, setting_name

FORMATS = ("text", "srt", "vtt", "json", "html")

# Extensions and content types (Podcasting 2.0 <podcast:transcript type=...>) to formats.
_HINTS = {
    "txt": "text",
    "text": "text",
    "text/plain": "text",
    "srt": "srt",
    "application/x-subrip": "srt",
    "application/srt": "srt",
    "text/srt": "srt",
    "vtt": "vtt",
    "webvtt": "vtt",
    "text/vtt": "vtt",
    "json": "json",
    "application/json": "json",
    "text/json": "json",
    "html": "html",
    "htm": "html",
    "text/html": "html",
    "application/xhtml+xml": "html",
}

_BOMS = (  # UTF-32 before UTF-16: the UTF-32-LE BOM starts with the UTF-16-LE one
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

_TIMING = r"(?:\d{1,2}:)?\d{1,2}:\d{2}(?:[.,]\d{1,3})?"
_CUE_TIMING = re.compile(rf"^\s*{_TIMING}\s*-->.*$", re.M)
_SRT_SIGNATURE = re.compile(rf"^\s*\d+\s*\n\s*{_TIMING}\s*-->\s*{_TIMING}", re.M)
_HTML_SIGNATURE = re.compile(r"<(?:!doctype\s+html|html|body|p|div|br|span|cite)\b", re.I)
# "[00:01:02]" and "(01:02)" anywhere; "00:01:02" only at a line start ("10:30" mid-sentence
# is speech).
_BRACKETED_TIME = re.compile(rf"[\[(]\s*{_TIMING}\s*[\])]")
_LINE_START_TIME = re.compile(r"^[ \t]*\d{1,2}:\d{2}:\d{2}(?:[.,]\d{1,3})?[ \t]*", re.M)
# A speaker label at a line start: "[Host]:", "JOHN:", "Speaker 1:", "Dr. Jane Doe:". Up to four
# capitalised words (or numbers) before the colon, so a sentence like "So here's the thing:"
# is kept.
_NAME_WORD = r"(?:[A-ZÀ-ÖØ-Þ][\w'’.\-]*|\d+)"
_SPEAKER_LABEL = re.compile(
    rf"^[ \t]*(?:[-–—][ \t]*)?(?P<name>\[[^\]\n]{{1,40}}\]|\([^)\n]{{1,40}}\)|{_NAME_WORD}"
    rf"(?:[ \t]+{_NAME_WORD}){{0,3}})[ \t]*:(?=\s|$)",
    re.M,
)
# Any one-word label ("call1-agent:", "host:", "spk_2:"), trusted only where labels are the
# document's habit (see _loose_labels): a lone "note: ..." line stays speech.
_LOOSE_LABEL = re.compile(r"^[ \t]*(?:[-–—][ \t]*)?(?P<name>[^\s:\[\]()<>]{1,40})[ \t]*:(?=\s|$)")
# "Speaker 1  0:00" or "Jane Doe [00:01:02]" alone on a line, the text below it (Otter, Rev
# exports): a label without a colon. Read as "Speaker 1:" before timestamps are dropped.
_NAME_THEN_TIME = re.compile(
    rf"^[ \t]*(?P<name>[A-ZÀ-ÖØ-Þ][\w'’.\-]*(?:[ \t]+{_NAME_WORD}){{0,3}})[ \t]+"
    rf"(?:{_TIMING}|[\[(][ \t]*{_TIMING}[ \t]*[\])])[ \t]*$",
    re.M,
)
_VOICE = re.compile(r"<v(?:\.[^\s>]*)?[ \t]+([^>\n]+)>")  # WebVTT "<v.loud Jane Doe>"
_DIALOGUE_DASH = re.compile(r"^[ \t]*[-–—][ \t]+", re.M)  # SRT marks a change of speaker so
_TAG = re.compile(r"<[^>\n]*>")
_ASS_TAG = re.compile(r"\{\\[^}]*\}")  # "{\an8}" positioning left in some SRT files
_SPACES = re.compile(r"[ \t\u00a0]+")
_BINARY_SAMPLE = 65536  # characters looked at to tell text from binary data
_MAX_CONTROL_SHARE = 0.01  # more control characters than this: binary


@dataclass(frozen=True)
class Reference:
    """A reference transcript as plain text, and where and how it was read."""

    text: str  # spoken words only, one cue or paragraph per line
    origin: str  # the path or URL as given
    format: str  # one of FORMATS
    sha256: str  # of the raw bytes read, so the exact published file can be identified
    encoding: str  # how the bytes were decoded
    # Who says what, in order, where the reference names speakers; () where it names none.
    # Their texts joined are ``text``, line for line.
    turns: tuple[SpeakerTurn, ...] = ()

    @property
    def speakers(self) -> tuple[str, ...]:
        """The speaker labels of ``turns``, each once, in order of first appearance."""
        return tuple(dict.fromkeys(t.speaker for t in self.turns if t.speaker is not None))

    @property
    def text_sha256(self) -> str:
        """sha256 of ``text``: what ``pipeline.core.types.Score`` records as reference_sha256."""
        return sha256_text(self.text)


# --- reading ---------------------------------------------------------------------------------


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def is_url(source: str) -> bool:
    """Whether a reference source is an http(s) URL (else it is a file path)."""
    return _is_url(source)


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        if not path.exists():
            raise ReferenceError(f"reference file not found: {path}")
        if path.is_dir():
            raise ReferenceError(f"reference is a folder, not a file: {path}")
        size = path.stat().st_size
    except (ValueError, OSError) as exc:  # a NUL byte in the name, a name too long
        raise ReferenceError(f"not a usable reference path: {str(path)!r} ({exc})") from None
    if size > max_bytes:
        raise ReferenceError(
            f"reference {path} is {size} bytes, over the limit of {max_bytes} bytes for a "
            f"transcript (raise {setting_name('max_reference_bytes')} if it really is one)"
        )
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ReferenceError(f"cannot read reference file {path}: {exc.strerror or exc}") from exc


def _fetch(url: str, limits: FetchLimits) -> tuple[bytes, str | None, str | None]:
    """Download ``url``: (body, content type, declared charset)."""
    try:
        with (
            NetSession(limits, limits.request_timeout_s, "request_timeout_s") as session,
            session.get(url) as response,
        ):
            if response.status_code >= 400:
                raise FetchError(
                    f"reference download failed: HTTP {response.status_code} "
                    f"{response.reason_phrase} for {url}"
                )
            body = session.read_capped(
                response, url, limits.max_reference_bytes, "max_reference_bytes"
            )
            content_type = response.headers.get("content-type")
            return body, content_type, response.charset_encoding
    except httpx.TimeoutException as exc:
        raise FetchError(
            f"timed out after {limits.read_timeout_s:g} s fetching reference {url}"
        ) from exc
    except httpx.HTTPError as exc:
        raise FetchError(f"cannot fetch reference {url}: {exc}") from exc


def format_hint(value: str | None) -> str | None:
    """A format name from an extension, a file name or a content type; None if unknown."""
    if not value:
        return None
    key = value.split(";")[0].strip().lower()
    if key in FORMATS:
        return key
    if key in _HINTS:
        return _HINTS[key]
    suffix = Path(urlparse(key).path).suffix.lstrip(".")
    return _HINTS.get(suffix)


def read_reference(source: str | Path, *, limits: FetchLimits | None = None) -> Reference:
    """Read a reference transcript from a local path or an http(s) URL, within ``limits``.

    Raises ReferenceError for a missing, empty, binary, oversized or unparseable reference,
    FetchError when a URL cannot be downloaded (HTTP error, timeout, network, refused).
    """
    limits = limits or FetchLimits()
    origin = str(source)
    charset: str | None = None
    if isinstance(source, str) and _is_url(source):
        data, content_type, charset = _fetch(source, limits)
        hint = format_hint(urlparse(source).path) or format_hint(content_type)
    else:
        if isinstance(source, str) and len(urlparse(source).scheme) > 1:
            raise ReferenceError(
                f"refusing reference {source}: give an http(s) URL or a local file path"
            )
        try:
            path = Path(source).expanduser()
        except RuntimeError as exc:  # "~nobody/ref.txt"
            raise ReferenceError(f"not a usable reference path: {origin!r} ({exc})") from None
        data = _read_file(path, limits.max_reference_bytes)
        hint = format_hint(path.suffix)
    text, encoding = decode_reference(data, charset, name=origin)
    plain, fmt, turns = _parse(text, hint, name=origin)
    return Reference(
        text=plain,
        origin=origin,
        format=fmt,
        sha256=hashlib.sha256(data).hexdigest(),
        encoding=encoding,
        turns=turns,
    )


# --- decoding --------------------------------------------------------------------------------


def _looks_utf16(data: bytes) -> str | None:
    """UTF-16 without a BOM: English text has a NUL in every other byte."""
    if len(data) < 4 or len(data) % 2:
        return None
    even, odd = data[0::2].count(0), data[1::2].count(0)
    if odd > len(data) // 4 and even == 0:
        return "utf-16-le"
    if even > len(data) // 4 and odd == 0:
        return "utf-16-be"
    return None


def decode_reference(
    data: bytes, declared: str | None = None, *, name: str = "reference"
) -> tuple[str, str]:
    """Decode reference bytes: (text, encoding).

    Order: a BOM; the charset a server declared; UTF-8; BOM-less UTF-16; cp1252 (what English
    text that is not UTF-8 almost always is: guessers misread short samples of it); then
    charset-normalizer; latin-1 last, which decodes anything.
    """
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding), encoding
            except UnicodeDecodeError as exc:
                raise ReferenceError(f"{name}: starts with a {encoding} BOM but is not") from exc
    candidates: list[str | None] = [declared] if declared else []
    candidates += ["utf-8", _looks_utf16(data), "cp1252"]
    for encoding in filter(None, candidates):
        try:
            return data.decode(encoding), encoding
        except (UnicodeDecodeError, LookupError):
            continue
    from charset_normalizer import from_bytes  # only for the rare file the above cannot read

    best = from_bytes(data).best()
    if best is not None:
        return str(best), best.encoding
    return data.decode("latin-1"), "latin-1"


# --- formats ---------------------------------------------------------------------------------


def _sniff(text: str) -> str | None:
    """A format recognised from the content itself, or None for anything plain."""
    head = text.lstrip()
    if head.startswith("WEBVTT"):
        return "vtt"
    if head[:1] in "{[":
        try:
            json.loads(text)
        except ValueError:
            pass
        else:
            return "json"
    if _SRT_SIGNATURE.search(text[:4096]):
        return "srt"
    if _HTML_SIGNATURE.search(text[:4096]):
        return "html"
    return None


def _blocks(text: str) -> list[list[str]]:
    """Blank-line separated blocks of non-empty lines (SRT cues, VTT cues and headers)."""
    return [block.splitlines() for block in re.split(r"\n[ \t]*\n", text) if block.strip()]


def _cue_text(lines: list[str]) -> list[str]:
    """The text lines of one SRT or VTT cue: whatever follows its timing line."""
    for i, line in enumerate(lines):
        if "-->" in line:
            return lines[i + 1 :]
    return []  # no timing: a stray number or header, not a cue


# A piece of a transcript: (speaker its markup names or None, its raw text lines).
_Piece = tuple[str | None, str]


def _parse_srt(text: str) -> list[_Piece]:
    pieces: list[_Piece] = []
    for block in _blocks(text):  # "<v Name>" is WebVTT's, but some SRT files carry it too
        pieces.extend(_voice_pieces(_ASS_TAG.sub("", "\n".join(_cue_text(block)))))
    return pieces


def _voice_pieces(cue: str) -> list[_Piece]:
    """Split a cue's text at its "<v Name>" tags: each part with the voice that says it."""
    parts = _VOICE.split(cue)  # text, name, text, name, text...
    pieces: list[_Piece] = [(None, parts[0])] if parts[0].strip() else []
    for k in range(1, len(parts), 2):
        speaker = _SPACES.sub(" ", html.unescape(parts[k])).strip() or None
        pieces.append((speaker, parts[k + 1]))
    return [(speaker, html.unescape(_TAG.sub("", raw))) for speaker, raw in pieces]


def _parse_vtt(text: str) -> list[_Piece]:
    pieces: list[_Piece] = []
    for block in _blocks(text):
        first = block[0].strip()
        # Header, comments and style/region definitions carry no speech.
        if first.startswith("WEBVTT") or first.split(" ")[0] in ("NOTE", "STYLE", "REGION"):
            continue
        pieces.extend(_voice_pieces("\n".join(_cue_text(block))))
    return pieces


def _parse_json(text: str, name: str) -> list[_Piece]:
    try:
        data: Any = json.loads(text)
    except ValueError as exc:
        raise ReferenceError(f"{name}: not valid JSON ({exc})") from exc
    segments = data.get("segments") if isinstance(data, dict) else data
    if not isinstance(segments, list):
        raise ReferenceError(
            f"{name}: JSON reference has no 'segments' list (expected a Podcasting 2.0 transcript)"
        )
    # Segments are often single words: join a speaker's turn on one line.
    pieces: list[tuple[object, str]] = []
    for seg in segments:
        if not isinstance(seg, dict) or not isinstance(seg.get("body"), str):
            continue
        if not pieces or seg.get("speaker") != pieces[-1][0]:
            pieces.append((seg.get("speaker"), ""))
        pieces[-1] = (pieces[-1][0], pieces[-1][1] + " " + seg["body"].strip())
    return [
        (speaker.strip() if isinstance(speaker, str) and speaker.strip() else None, body)
        for speaker, body in pieces
    ]


class _TextExtractor(HTMLParser):
    """Visible text of an HTML transcript, one block element per line."""

    # script/style/head are not speech; <cite> and <time> are the speaker and timestamp of a
    # Podcasting 2.0 HTML transcript.
    _SKIP = frozenset({"script", "style", "head", "title", "noscript", "template", "cite", "time"})
    _BLOCK = frozenset(
        {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "section",
         "article", "blockquote", "dt", "dd", "hr", "table", "ul", "ol"}
    )  # fmt: skip

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[tuple[str | None, list[str]]] = [(None, [])]
        self._skipping: list[str] = []
        self._cite: list[str] = []  # text of the <cite> being read: the next speaker

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping.append(tag)
            if tag == "cite":
                self._cite = []
        elif tag in self._BLOCK:
            self.pieces[-1][1].append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and tag in self._skipping:
            while self._skipping and self._skipping.pop() != tag:
                pass
            if tag == "cite":
                name = _SPACES.sub(" ", "".join(self._cite)).strip().rstrip(":").strip()
                self.pieces.append((name or None, []))
        elif tag in self._BLOCK:
            self.pieces[-1][1].append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.pieces[-1][1].append(data)
        elif self._skipping[-1] == "cite":
            self._cite.append(data)


def _parse_html(text: str) -> list[_Piece]:
    parser = _TextExtractor()
    parser.feed(text)
    parser.close()
    return [(speaker, "".join(parts)) for speaker, parts in parser.pieces]


def _untimed_lines(text: str) -> list[str]:
    """The lines of ``text`` without cue timings and timestamps."""
    text = _CUE_TIMING.sub("", text)
    text = _NAME_THEN_TIME.sub(r"\g<name>:", text)
    text = _BRACKETED_TIME.sub(" ", text)
    return _LINE_START_TIME.sub("", text).splitlines()


def _loose_labels(lines: list[str]) -> bool:
    """True where one-word labels are the document's habit, so "call1-agent:" is a speaker.

    Labels come back (a transcript's speakers do; a colon that happens to follow a first word
    rarely does) and open at least half of the non-empty lines, or a quarter where two or more
    of them come back (turns of several paragraphs).
    """
    names = [m["name"] for line in lines if (m := _LOOSE_LABEL.match(line))]
    spoken = sum(1 for line in lines if line.strip())
    repeated = [n for n, count in Counter(names).items() if count > 1]
    if not repeated:
        return False
    return 2 * len(names) >= spoken or (len(repeated) > 1 and 4 * len(names) >= spoken)


def _label_name(raw: str) -> str:
    """A speaker label as a name: "[Host]" and "(Host)" are "Host"."""
    if raw[:1] in "[(":
        raw = raw[1:-1]
    return _SPACES.sub(" ", raw).strip()


def _clean_lines(pieces: list[_Piece]) -> list[tuple[str | None, str]]:
    """(speaker, line) for every line with words: timings, timestamps and speaker labels gone,
    one space between words. A line without a label is said by whoever spoke last."""
    untimed = [(speaker, _untimed_lines(raw)) for speaker, raw in pieces]
    label = _LOOSE_LABEL if _loose_labels([ln for _, lines in untimed for ln in lines]) else None
    out: list[tuple[str | None, str]] = []
    current: str | None = None
    for markup_speaker, lines in untimed:
        current = markup_speaker or current
        for line in lines:
            match = _SPEAKER_LABEL.match(line) or (label.match(line) if label else None)
            if match:
                current = _label_name(match["name"]) or current
                line = line[match.end() :]
            elif _DIALOGUE_DASH.match(line):
                current = None  # a subtitle dash: someone else speaks, unnamed
            line = _SPACES.sub(" ", _DIALOGUE_DASH.sub("", line)).strip()
            if line:
                out.append((current, line))
    return out


def _turns(lines: list[tuple[str | None, str]]) -> tuple[SpeakerTurn, ...]:
    """Consecutive lines of one speaker as one turn; () where no line names a speaker."""
    if all(speaker is None for speaker, _ in lines):
        return ()
    turns: list[SpeakerTurn] = []
    for speaker, line in lines:
        if turns and turns[-1].speaker == speaker:
            turns[-1] = SpeakerTurn(speaker, f"{turns[-1].text}\n{line}")
        else:
            turns.append(SpeakerTurn(speaker, line))
    return tuple(turns)


def _refuse_binary(text: str, name: str) -> None:
    """Raise ReferenceError when decoded ``text`` is really binary data (audio, an image...).

    Text has no NUL and almost no other control characters; random bytes decode to about one
    control character in ten, whatever the encoding chosen.
    """
    sample = text[:_BINARY_SAMPLE]
    controls = sum(1 for ch in sample if ch < " " and ch not in "\t\n\r\f\v")
    if "\x00" in sample or controls > len(sample) * _MAX_CONTROL_SHARE:
        raise ReferenceError(
            f"reference {name} is binary data, not text ({controls} control characters in its "
            f"first {len(sample)}): give a transcript as text, SRT, WebVTT, JSON or HTML"
        )


def _parse(text: str, hint: str | None, *, name: str) -> tuple[str, str, tuple[SpeakerTurn, ...]]:
    text = text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")
    if not text.strip():
        raise ReferenceError(f"reference {name} is empty: it holds no text")
    _refuse_binary(text, name)
    # Content that announces itself wins over a hint: servers label .srt and .vtt text/plain.
    fmt = _sniff(text) if hint != "json" else "json"
    fmt = fmt or hint or "text"
    if fmt == "vtt":
        pieces = _parse_vtt(text)
    elif fmt == "srt":
        pieces = _parse_srt(text)
    elif fmt == "json":
        pieces = _parse_json(text, name)
    elif fmt == "html":
        pieces = _parse_html(text)
    else:
        pieces = [(None, text)]
    lines = _clean_lines(pieces)
    if not lines:
        raise ReferenceError(f"reference {name} is empty: its {fmt} holds no transcript text")
    return "\n".join(line for _, line in lines), fmt, _turns(lines)


def parse_reference_text(
    data: bytes, fmt_hint: str | None = None, *, name: str = "reference"
) -> tuple[str, str]:
    """Plain text and format of reference bytes already in hand (e.g. from a feed).

    ``fmt_hint`` is a format name, an extension or a content type; content that identifies
    itself (a WEBVTT header, SRT timings, JSON) overrides it. ``name`` appears in errors.
    """
    text, _ = decode_reference(data, name=name)
    plain, fmt, _ = _parse(text, format_hint(fmt_hint), name=name)
    return plain, fmt


def parse_reference_turns(
    data: bytes, fmt_hint: str | None = None, *, name: str = "reference"
) -> tuple[SpeakerTurn, ...]:
    """The speaker turns of reference bytes already in hand; () where it names no speaker."""
    text, _ = decode_reference(data, name=name)
    return _parse(text, format_hint(fmt_hint), name=name)[2]
