"""Read a podcast feed (RSS 2.0 or Atom) into frozen values: audio episodes and transcript links.

The feed's bytes are fetched through ``pipeline.sources.net`` (so timeouts, retries, address checks
and a size cap are ours: ``FetchLimits``), checked
with defusedxml (an XML bomb or an HTML page is refused before feedparser sees it), then read with
feedparser, which smooths over RSS/Atom differences and date formats. Podcasting 2.0
``<podcast:transcript>`` links come from the raw XML: feedparser keeps only one per item; so do
``<podcast:person>`` tags (who takes part: names for the diarizer's speakers).
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import re
import time
import xml.etree.ElementTree as StdET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import defusedxml.ElementTree as SafeET
import feedparser
import httpx
from defusedxml import DefusedXmlException

from pipeline.core.errors import FeedError, FetchError, OptionsError, PodscribeError
from pipeline.core.store import slugify
from pipeline.core.types import Person
from pipeline.sources.net import SCHEMES, FetchLimits, NetSession, setting_name
from pipeline.sources.reference import (
    Reference,
    format_hint,  # one type/extension table for both
    read_reference,
)

log = logging.getLogger(__name__)

DEFAULT_RETRIES = 3  # extra attempts after the first, for timeouts, dropped connections and 5xx
DEFAULT_BACKOFF_S = 1.0  # seconds before the first retry; doubles each time
PODCAST_NS = "https://podcastindex.org/namespace/1.0"
_ATOM_NS = "http://www.w3.org/2005/Atom"
_FEED_ROOTS = ("rss", "feed", "RDF")  # local names of the root element of RSS, Atom, RSS 1.0
# Best first: JSON keeps the words apart from timing; HTML and plain text often carry extra prose.
TRANSCRIPT_PREFERENCE = ("json", "vtt", "srt", "html", "text")
# <podcast:person> from a hostile feed: a longer "name" is not one, more people per episode
# than this is not a cast (and every name costs a pass over the transcript when naming).
MAX_PERSON_NAME = 200
MAX_PERSONS = 20
_MAX_PERSON_WORD = 50  # a role or group longer than this is not one of the namespace's words
_MAX_HREF = 2000


@dataclass(frozen=True)
class TranscriptLink:
    """A Podcasting 2.0 ``<podcast:transcript>`` link of an episode."""

    url: str
    type: str  # the MIME type the feed declares, e.g. "text/vtt" ("" when absent)
    language: str | None = None

    @property
    def format(self) -> str | None:
        """One of TRANSCRIPT_PREFERENCE, from the declared type or else the URL's extension."""
        return format_hint(self.type) or format_hint(self.url)


@dataclass(frozen=True)
class FeedEpisode:
    """One item of a feed that has an audio (or video) enclosure."""

    guid: str  # the item's GUID (Atom id), else "sha256:<hex of the enclosure URL>"
    episode_id: str  # slug of the title + 8 hex of sha256(feed URL, guid): path- and key-safe
    title: str
    audio_url: str
    audio_type: str  # MIME type, declared or guessed from the URL
    published: str | None  # ISO 8601 in UTC, None when the feed gives no readable date
    transcripts: tuple[TranscriptLink, ...] = ()
    # <podcast:person> of the item, else of the channel (the namespace: an item's list replaces
    # the channel's), at most MAX_PERSONS
    persons: tuple[Person, ...] = ()


@dataclass(frozen=True)
class Feed:
    """A podcast feed as read at one moment."""

    url: str  # the URL or path the user gave (not a redirect target: ids derive from it)
    title: str
    feed_id: str  # slug of the title (else the host) + 8 hex of sha256(url)
    episodes: tuple[FeedEpisode, ...]
    skipped: tuple[tuple[str, str], ...] = ()  # (item title, why it is not an episode)
    items_ignored: int = 0  # items past the max_feed_items limit, not read at all


class _Transient(Exception):
    """A failure worth retrying (timeout, dropped connection, 5xx); carries a one-line reason."""


# --- fetching --------------------------------------------------------------------------------


def fetch_feed(
    url_or_path: str,
    *,
    limits: FetchLimits | None = None,
    retries: int = DEFAULT_RETRIES,
    backoff_s: float = DEFAULT_BACKOFF_S,
) -> Feed:
    """Fetch and parse the feed at an http(s) URL or a local path, within ``limits``.

    Timeouts, dropped connections and 5xx answers are retried ``retries`` times with exponential
    backoff; then, or at once for a 4xx, a refused URL or a limit, a FeedError names the URL.
    """
    limits = limits or FetchLimits()
    scheme = urlparse(url_or_path).scheme.lower()
    if scheme in SCHEMES:
        try:
            data = _download_feed(url_or_path, limits, retries, backoff_s)
        except FetchError as exc:  # refused, too large, too slow: a feed error for the caller
            raise FeedError(str(exc)) from exc
        return parse_feed(data, url_or_path, max_items=limits.max_feed_items)
    if len(scheme) > 1 or url_or_path.lower().startswith("file:"):
        raise FeedError(
            f"refusing feed {url_or_path}: only http(s) URLs or local file paths are read"
        )
    # An absolute path as the origin: ids derive from it, so they must not depend on the cwd.
    try:
        path = Path(url_or_path).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as exc:  # NUL, a loop, "~nobody"
        raise FeedError(f"not a usable feed path: {url_or_path!r} ({exc})") from None
    data = _read_feed_file(path, url_or_path, limits.max_feed_bytes)
    return parse_feed(data, str(path), max_items=limits.max_feed_items)


def _read_feed_file(path: Path, given: str, max_bytes: int) -> bytes:
    if not path.is_file():
        raise FeedError(f"feed file not found: {given} (give an http(s) URL or a file path)")
    size = path.stat().st_size
    if size > max_bytes:
        raise FeedError(
            f"feed {given} is {size} bytes, over the limit of {max_bytes} bytes "
            f"(raise {setting_name('max_feed_bytes')} if this is expected)"
        )
    return path.read_bytes()


def _download_feed(url: str, limits: FetchLimits, retries: int, backoff_s: float) -> bytes:
    # One total deadline for the feed, retries included (PODSCRIBE_REQUEST_TIMEOUT_S).
    with NetSession(limits, limits.request_timeout_s, "request_timeout_s") as session:
        for attempt in range(retries + 1):
            try:
                return _get_once(session, url)
            except _Transient as exc:
                if attempt == retries:
                    raise FeedError(
                        f"cannot fetch feed {url}: {exc} (gave up after {retries + 1} attempts)"
                    ) from exc
                delay = backoff_s * 2**attempt
                log.warning("feed %s: %s; retrying in %.1f s", url, exc, delay)
                time.sleep(delay)
    raise AssertionError("unreachable: the loop returns or raises")


def _get_once(session: NetSession, url: str) -> bytes:
    try:
        with session.get(url) as response:
            if response.status_code >= 500:
                raise _Transient(f"HTTP {response.status_code} {response.reason_phrase}")
            if response.status_code >= 400:
                raise FeedError(
                    f"cannot fetch feed {url}: HTTP {response.status_code} "
                    f"{response.reason_phrase} (check the URL)"
                )
            return session.read_capped(
                response, url, session.limits.max_feed_bytes, "max_feed_bytes"
            )
    except httpx.TimeoutException as exc:
        raise _Transient(f"timed out after {session.limits.read_timeout_s:g} s") from exc
    except httpx.TransportError as exc:
        raise _Transient(f"network error: {exc}") from exc
    except httpx.HTTPError as exc:  # an invalid URL, a broken redirect
        raise FeedError(f"cannot fetch feed {url}: {exc}") from exc


# --- parsing ---------------------------------------------------------------------------------


def parse_feed(data: bytes, origin: str, *, max_items: int | None = None) -> Feed:
    """Parse feed bytes read from ``origin`` (a URL or path, used for ids and in errors).

    Only the first ``max_items`` items are read (default: FetchLimits().max_feed_items); the
    rest are counted in ``Feed.items_ignored`` and logged. Raises FeedError, and nothing else,
    when the bytes are not an RSS/Atom feed, are unsafe XML, or hold no item with an audio
    enclosure.
    """
    max_items = max_items if max_items is not None else FetchLimits().max_feed_items
    root = _safe_xml(data, origin)
    ignored = 0
    if root is not None:
        ignored = _drop_items_over(root, max_items)
        if ignored:  # feedparser then reads only what is kept: a huge feed costs no more
            data = StdET.tostring(root, encoding="utf-8")
    transcripts = _transcripts_from_xml(root) if root is not None else None
    persons = _persons_from_xml(root) if root is not None else _ItemPersons((), {})
    try:
        parsed = feedparser.parse(data)
    except Exception as exc:
        raise FeedError(f"{origin} is not a readable feed ({type(exc).__name__}: {exc})") from exc
    if not parsed.get("version"):
        raise FeedError(f"{origin} is not an RSS or Atom feed (give the podcast's feed URL)")
    if transcripts is None:  # malformed XML that feedparser's lenient parser could still read
        log.warning("feed %s is not well-formed XML; reading it leniently", origin)
    entries = parsed.entries
    if len(entries) > max_items:  # the lenient path: nothing was dropped before feedparser
        ignored, entries = len(entries) - max_items, entries[:max_items]
    if ignored:
        log.warning(
            "feed %s: read the first %d items and ignored %d more (the limit is %s)",
            origin,
            max_items,
            ignored,
            setting_name("max_feed_items"),
        )
    title = str(parsed.feed.get("title") or "").strip()
    episodes, skipped = _read_entries(entries, origin, transcripts or {}, persons)
    if not episodes:
        raise FeedError(_no_episodes_message(origin, entries, skipped))
    return Feed(
        url=origin,
        title=title or _origin_name(origin),
        feed_id=feed_id_for(origin, title),
        episodes=tuple(episodes),
        skipped=tuple(skipped),
        items_ignored=ignored,
    )


def feed_id_for(origin: str, title: str) -> str:
    """A stable, path-safe feed id: slug of the title (else the host) + 8 hex of sha256(origin)."""
    return f"{slugify(title or _origin_name(origin), max_len=40)}-{_short_hash(origin)}"


def _origin_name(origin: str) -> str:
    """A name for an untitled feed: the URL's host, or the file's stem."""
    return urlparse(origin).netloc or Path(origin).stem


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode("utf-8")).hexdigest()[:8]


def _no_episodes_message(origin: str, entries: list[Any], skipped: list[tuple[str, str]]) -> str:
    if not entries:
        return f"feed {origin} has no items: nothing to transcribe"
    reasons = "; ".join(f"{title!r}: {why}" for title, why in skipped[:3])
    return f"feed {origin} has no item with an audio enclosure ({reasons})"


# "<!ENTITY" as UTF-8/ASCII and as UTF-16: the declaration must not slip past in another encoding.
_ENTITY_MARKS = (b"<!ENTITY", "<!ENTITY".encode("utf-16-le"), "<!ENTITY".encode("utf-16-be"))


def _safe_xml(data: bytes, origin: str) -> StdET.Element | None:
    """The feed's XML tree; None if it is malformed. Raises FeedError for unsafe XML.

    The safety check: DTD entities (XML bombs, external entities) are refused here, before
    feedparser, whose parser would expand them.
    """
    try:
        root = SafeET.fromstring(data)
    except DefusedXmlException as exc:
        raise FeedError(
            f"feed {origin} declares XML entities ({exc}); refusing it as unsafe"
        ) from exc
    except (StdET.ParseError, ValueError, LookupError, RecursionError):
        # Lenient parsing must not become a way around the check above.
        if any(mark in data for mark in _ENTITY_MARKS):
            raise FeedError(f"feed {origin} is malformed XML with entity declarations") from None
        return None
    if _local_name(root.tag) not in _FEED_ROOTS:
        raise FeedError(
            f"{origin} is not an RSS or Atom feed (its root element is <{_local_name(root.tag)}>; "
            "give the podcast's feed URL)"
        )
    return root


def _drop_items_over(root: StdET.Element, max_items: int) -> int:
    """Remove every item after the first ``max_items`` from the tree; return how many."""
    seen = dropped = 0
    for parent in list(root.iter()):
        for child in list(parent):
            if _is_item(child):
                seen += 1
                if seen > max_items:
                    parent.remove(child)
                    dropped += 1
    return dropped


def _transcripts_from_xml(root: StdET.Element) -> dict[str, tuple[TranscriptLink, ...]]:
    """Transcript links per item key (GUID/id, else enclosure URL)."""
    links: dict[str, tuple[TranscriptLink, ...]] = {}
    for item in _xml_items(root):
        key = _xml_item_key(item)
        if key and key not in links:  # duplicate GUIDs: the first item wins, as in _read_entries
            links[key] = tuple(_xml_transcripts(item))
    return links


@dataclass(frozen=True)
class _ItemPersons:
    """The channel's persons, and those of each item that lists its own (by item key)."""

    channel: tuple[Person, ...]
    items: dict[str, tuple[Person, ...]]

    def of(self, key: str) -> tuple[Person, ...]:
        found = self.items.get(key)
        return self.channel if found is None else found


def _persons_from_xml(root: StdET.Element) -> _ItemPersons:
    """<podcast:person> tags: the channel's (direct children of <channel> or Atom's <feed>)
    and, per item key, the item's own."""
    channel: tuple[Person, ...] = ()
    for element in root.iter():
        tag = element.tag if isinstance(element.tag, str) else ""
        if _local_name(tag) in ("channel", "feed") and not _is_item(element):
            channel = _read_persons(element)
            if channel:
                break
    items: dict[str, tuple[Person, ...]] = {}
    for item in _xml_items(root):
        key = _xml_item_key(item)
        found = _read_persons(item)
        # An item without (usable) persons of its own takes the channel's.
        if key and found and key not in items:
            items[key] = found
    return _ItemPersons(channel, items)


def _read_persons(parent: StdET.Element) -> tuple[Person, ...]:
    """The usable <podcast:person> children of ``parent``: first MAX_PERSONS, one per name."""
    persons: list[Person] = []
    seen: set[str] = set()
    for element in parent.findall(f"{{{PODCAST_NS}}}person"):
        person = _person(element)
        if person is None or person.name.casefold() in seen:
            continue
        seen.add(person.name.casefold())
        persons.append(person)
        if len(persons) == MAX_PERSONS:
            break
    return tuple(persons)


def _person(element: StdET.Element) -> Person | None:
    name = _clean_text(element.text or "")
    if not name or len(name) > MAX_PERSON_NAME:
        return None
    href = (element.get("href") or "").strip()
    return Person(
        name=name,
        role=_person_word(element.get("role"), "host"),
        group=_person_word(element.get("group"), "cast"),
        href=href if href and len(href) <= _MAX_HREF and _is_web_url(href) else None,
    )


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _clean_text(text: str) -> str:
    """One line, control characters dropped, runs of spaces as one."""
    return " ".join(_CONTROL.sub(" ", text).split())


def _person_word(value: str | None, default: str) -> str:
    """A role or group as the namespace spells them (case-insensitive), else ``default``."""
    word = _clean_text(value or "").lower()
    return word if word and len(word) <= _MAX_PERSON_WORD else default


def parse_person(text: str) -> Person:
    """A person given by hand: "Name" or "Name:role" (role default "host"); OptionsError
    when the name is empty or too long."""
    name, _, role = text.rpartition(":") if ":" in text else (text, "", "")
    person = Person(_clean_text(name), _person_word(role, "host"))
    if not person.name or len(person.name) > MAX_PERSON_NAME:
        raise OptionsError(
            f"person {text[:80]!r}: give a name of 1 to {MAX_PERSON_NAME} characters, "
            'optionally with a role: "Alice Smith:host"'
        )
    return person


def format_person(person: Person) -> str:
    """``person`` as parse_person reads it: "Name:role"."""
    return f"{person.name}:{person.role}"


def _local_name(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _is_item(element: StdET.Element) -> bool:
    tag = element.tag if isinstance(element.tag, str) else ""  # comments have a function tag
    return tag == f"{{{_ATOM_NS}}}entry" or _local_name(tag) == "item"


def _xml_items(root: StdET.Element) -> Iterable[StdET.Element]:
    for element in root.iter():
        if _is_item(element):
            yield element


def _xml_item_key(item: StdET.Element) -> str | None:
    for tag in ("guid", f"{{{_ATOM_NS}}}id"):
        text = (item.findtext(tag) or "").strip()
        if text:
            return text
    for enclosure in item.iter("enclosure"):
        if enclosure.get("url"):
            return _url_guid(enclosure.get("url", "").strip())
    for link in item.iter(f"{{{_ATOM_NS}}}link"):
        if link.get("rel") == "enclosure" and link.get("href"):
            return _url_guid(link.get("href", "").strip())
    return None


def _xml_transcripts(item: StdET.Element) -> Iterable[TranscriptLink]:
    for element in item.iter(f"{{{PODCAST_NS}}}transcript"):
        url = (element.get("url") or "").strip()
        if url:
            yield TranscriptLink(
                url=url, type=element.get("type", ""), language=element.get("language")
            )


def _url_guid(url: str) -> str:
    return "sha256:" + hashlib.sha256(url.encode("utf-8")).hexdigest()


def _read_entries(
    entries: list[Any],
    origin: str,
    transcripts: dict[str, tuple[TranscriptLink, ...]],
    persons: _ItemPersons,
) -> tuple[list[FeedEpisode], list[tuple[str, str]]]:
    episodes: list[FeedEpisode] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in entries:
        title = str(entry.get("title") or "").strip() or "(untitled)"
        episode, why = _episode_from_entry(entry, title, origin, transcripts, persons)
        if episode is not None and episode.guid in seen:
            why = f"duplicate GUID {episode.guid!r}: kept the first item"
            episode = None
        if episode is None:
            log.warning("feed %s: skipping item %r: %s", origin, title, why)
            skipped.append((title, why))
            continue
        seen.add(episode.guid)
        episodes.append(episode)
    return episodes, skipped


def _episode_from_entry(
    entry: Any,
    title: str,
    origin: str,
    transcripts: dict[str, tuple[TranscriptLink, ...]],
    persons: _ItemPersons,
) -> tuple[FeedEpisode | None, str]:
    """The episode of one feedparser entry, or None and the reason it is not one."""
    enclosures = [e for e in entry.get("enclosures", []) if e.get("href")]
    if not enclosures:
        return None, "no enclosure"
    media = [(e["href"].strip(), _media_type(e)) for e in enclosures]
    audio = [(url, kind) for url, kind in media if kind.startswith(("audio/", "video/"))]
    if not audio:
        return None, f"enclosure is not audio ({media[0][1] or 'no type'})"
    audio_url, audio_type = audio[0]
    if not _is_web_url(audio_url):  # a feed must not point podscribe at local files
        return None, f"enclosure {audio_url[:100]!r} is not an http(s) URL"
    guid = str(entry.get("id") or "").strip() or _url_guid(audio_url)
    links = transcripts.get(guid, ()) or _feedparser_transcript(entry)
    links = tuple(link for link in links if _is_web_url(link.url))
    episode = FeedEpisode(
        guid=guid,
        episode_id=episode_id_for_item(origin, guid, title),
        title=title,
        audio_url=audio_url,
        audio_type=audio_type,
        published=_published(entry),
        transcripts=links,
        persons=persons.of(guid),
    )
    return episode, ""


def episode_id_for_item(origin: str, guid: str, title: str) -> str:
    """A feed item's stable, path-safe id: slug of the title + 8 hex of sha256(origin, guid)."""
    return f"{slugify(title, max_len=40)}-{_short_hash(origin, guid)}"


def _is_web_url(url: str) -> bool:
    return urlparse(url).scheme.lower() in SCHEMES


def _media_type(enclosure: Any) -> str:
    declared = str(enclosure.get("type") or "").split(";")[0].strip().lower()
    if declared:
        return declared
    # Many feeds omit the type; the extension (.mp3, .m4a) is then the only clue.
    guessed, _ = mimetypes.guess_type(urlparse(enclosure["href"]).path)
    return guessed or ""


def _feedparser_transcript(entry: Any) -> tuple[TranscriptLink, ...]:
    """The one transcript feedparser keeps: used only when the raw XML could not be read."""
    found = entry.get("podcast_transcript")
    if not found or not found.get("url"):
        return ()
    return (
        TranscriptLink(
            url=found["url"], type=found.get("type", ""), language=found.get("language")
        ),
    )


def _published(entry: Any) -> str | None:
    parsed = entry.get("published_parsed") or entry.get("updated_parsed")
    if not parsed:
        return None
    year, month, day, hour, minute, second = parsed[:6]
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).isoformat()


# --- transcripts -----------------------------------------------------------------------------


def best_transcript(episode: FeedEpisode) -> TranscriptLink | None:
    """The episode's transcript link in the most useful format (TRANSCRIPT_PREFERENCE), if any."""
    ranked = _ranked_transcripts(episode.transcripts)
    return ranked[0] if ranked else None


def _ranked_transcripts(links: Iterable[TranscriptLink]) -> list[TranscriptLink]:
    """Known formats in preference order (feed order within a format); unknown ones are dropped."""
    known = [link for link in links if link.format in TRANSCRIPT_PREFERENCE]
    return sorted(known, key=lambda link: TRANSCRIPT_PREFERENCE.index(link.format or ""))


def fetch_episode_reference(
    episode: FeedEpisode, limits: FetchLimits | None = None
) -> Reference | None:
    """The episode's reference transcript, or None.

    Tries the transcript links best first. A link that 404s, times out or does not parse is
    logged and the next one tried: a missing transcript must never stop transcription (the
    episode is scored later, when a reference arrives).
    """
    for link in _ranked_transcripts(episode.transcripts):
        try:
            return read_reference(link.url, limits=limits)
        except PodscribeError as exc:
            log.warning("episode %s: transcript %s unusable: %s", episode.episode_id, link.url, exc)
    if not episode.transcripts:
        log.info("episode %s: the feed links no transcript", episode.episode_id)
    return None
