"""Feeds read from a real HTTP server on 127.0.0.1: RSS, Atom, transcripts and every bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import LocalHTTPServer, Reply
from feedgen import Item, atom, rss

from pipeline.core.errors import FeedError
from pipeline.sources.feed import (
    FeedEpisode,
    TranscriptLink,
    best_transcript,
    fetch_episode_reference,
    fetch_feed,
    parse_feed,
)
from pipeline.sources.net import FetchLimits

SAFE_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# The test server is on 127.0.0.1, which podscribe refuses unless local networks are allowed.
LOCAL = FetchLimits(read_timeout_s=2.0, allow_private_networks=True)
FAST = {"limits": LOCAL, "retries": 2, "backoff_s": 0.01}  # keep retry tests quick

SRT = b"1\n00:00:00,000 --> 00:00:02,000\nHOST: Hello from the srt.\n"
VTT = b"WEBVTT\n\n00:00.000 --> 00:02.000\n<v Host>Hello from the vtt.\n"
PC20_JSON = json.dumps(
    {
        "version": "1.0.0",
        "segments": [{"speaker": "Host", "startTime": 0, "endTime": 2, "body": "Hello from json."}],
    }
).encode()


def _items(srv: LocalHTTPServer) -> list[Item]:
    """Three good episodes (one per transcript format), then every kind of item to skip."""
    return [
        Item(
            "Episode One",
            "guid-1",
            (srv.url("/a/1.mp3"), "audio/mpeg"),
            transcripts=(
                (srv.url("/t/1.srt"), "application/x-subrip"),
                (srv.url("/t/1.vtt"), "text/vtt"),
                (srv.url("/t/1.json"), "application/json"),
            ),
        ),
        Item(
            "Episode Two",
            "guid-2",
            (srv.url("/a/2.m4a"), "audio/x-m4a"),
            transcripts=((srv.url("/t/2.vtt"), "text/vtt"),),
        ),
        Item("Episode Three: Video!", "guid-3", (srv.url("/a/3.mp4"), "video/mp4")),
        Item("Episode One again", "guid-1", (srv.url("/a/1b.mp3"), "audio/mpeg")),
        Item("Show notes PDF", "guid-pdf", (srv.url("/notes.pdf"), "application/pdf")),
        Item("Announcement", "guid-text", None),
    ]


def test_rss_feed(http_server: LocalHTTPServer) -> None:
    url = http_server.route(
        "/feed.xml", Reply(rss("My Show", _items(http_server)), content_type="application/rss+xml")
    )
    feed = fetch_feed(url, **FAST)

    assert feed.url == url and feed.title == "My Show"
    assert SAFE_ID.match(feed.feed_id) and feed.feed_id.startswith("my-show-")
    assert [e.guid for e in feed.episodes] == ["guid-1", "guid-2", "guid-3"]
    first = feed.episodes[0]
    assert first.audio_url == http_server.url("/a/1.mp3") and first.audio_type == "audio/mpeg"
    assert first.published == "2025-06-02T10:00:00+00:00"
    # All three links survive (feedparser alone keeps only the last one).
    assert [t.url.rsplit("/", 1)[1] for t in first.transcripts] == ["1.srt", "1.vtt", "1.json"]
    assert first.transcripts[1] == TranscriptLink(http_server.url("/t/1.vtt"), "text/vtt", "en")
    for episode in feed.episodes:
        assert SAFE_ID.match(episode.episode_id), episode.episode_id
    assert feed.episodes[2].episode_id.startswith("episode-three-video-")

    reasons = dict(feed.skipped)
    assert set(reasons) == {"Episode One again", "Show notes PDF", "Announcement"}
    assert "duplicate GUID 'guid-1'" in reasons["Episode One again"]
    assert reasons["Show notes PDF"] == "enclosure is not audio (application/pdf)"
    assert reasons["Announcement"] == "no enclosure"


def test_ids_are_stable_and_scoped_by_feed(http_server: LocalHTTPServer) -> None:
    data = rss("My Show", _items(http_server))
    one, again = parse_feed(data, "http://x/feed"), parse_feed(data, "http://x/feed")
    other = parse_feed(data, "http://y/feed")
    assert one == again
    assert one.feed_id != other.feed_id
    # The same GUID in another feed (GUIDs like "1" are common) is another episode.
    assert one.episodes[0].episode_id != other.episodes[0].episode_id


def test_atom_feed(http_server: LocalHTTPServer) -> None:
    items = [
        Item(
            "Atom One",
            "urn:ep:1",
            (http_server.url("/a/1.ogg"), "audio/ogg"),
            transcripts=(
                (http_server.url("/t/1.vtt"), "text/vtt"),
                (http_server.url("/t/1.json"), "application/json"),
            ),
        ),
        Item("Atom Two", "urn:ep:2", (http_server.url("/a/2.pdf"), "application/pdf")),
    ]
    url = http_server.route(
        "/atom.xml", Reply(atom("Atom Show", items), content_type="application/atom+xml")
    )
    feed = fetch_feed(url, **FAST)
    assert feed.title == "Atom Show"
    [episode] = feed.episodes
    assert (episode.guid, episode.audio_type) == ("urn:ep:1", "audio/ogg")
    assert episode.published == "2025-06-02T10:00:00+00:00"
    assert [t.type for t in episode.transcripts] == ["text/vtt", "application/json"]
    assert feed.skipped == (("Atom Two", "enclosure is not audio (application/pdf)"),)


def test_item_without_guid_is_identified_by_its_enclosure_url() -> None:
    items = [
        Item("No GUID", None, ("http://cdn/ep.mp3", "")),
        Item("No GUID either", None, ("http://cdn/ep2.mp3", "audio/mpeg")),
    ]
    feed = parse_feed(rss("S", items), "http://x/feed")
    guids = [e.guid for e in feed.episodes]
    assert all(g.startswith("sha256:") for g in guids) and len(set(guids)) == 2
    # No declared type: the extension says audio.
    assert feed.episodes[0].audio_type == "audio/mpeg"


def _episode(*links: tuple[str, str]) -> FeedEpisode:
    return FeedEpisode(
        "g",
        "ep-1234abcd",
        "Ep",
        "http://x/a.mp3",
        "audio/mpeg",
        None,
        tuple(TranscriptLink(url, kind) for url, kind in links),
    )


@pytest.mark.parametrize(
    ("links", "expected"),
    [
        ((), None),
        (
            (("http://x/t.srt", "application/x-subrip"), ("http://x/t.json", "application/json")),
            "http://x/t.json",
        ),
        ((("http://x/t.txt", "text/plain"), ("http://x/t.html", "text/html")), "http://x/t.html"),
        ((("http://x/t.srt", "application/srt"), ("http://x/t.vtt", "text/vtt")), "http://x/t.vtt"),
        ((("http://x/t.vtt", ""),), "http://x/t.vtt"),  # no type: the extension decides
        ((("http://x/t.pdf", "application/pdf"),), None),  # not a format we can read
    ],
)
def test_best_transcript(links: tuple[tuple[str, str], ...], expected: str | None) -> None:
    best = best_transcript(_episode(*links))
    assert (best.url if best else None) == expected


def test_episode_reference_prefers_json(http_server: LocalHTTPServer) -> None:
    http_server.route("/t/1.json", Reply(PC20_JSON, content_type="application/json"))
    http_server.route("/t/1.srt", Reply(SRT, content_type="application/x-subrip"))
    http_server.route("/t/1.vtt", Reply(VTT, content_type="text/vtt"))
    feed = parse_feed(rss("S", _items(http_server)), "http://x/feed")
    reference = fetch_episode_reference(feed.episodes[0], limits=LOCAL)
    assert reference is not None
    assert (reference.format, reference.text) == ("json", "Hello from json.")


def test_transcript_404_falls_back_then_gives_none(http_server: LocalHTTPServer) -> None:
    http_server.route("/t/1.vtt", Reply(VTT, content_type="text/vtt"))  # json and srt 404
    feed = parse_feed(rss("S", _items(http_server)), "http://x/feed")
    reference = fetch_episode_reference(feed.episodes[0], limits=LOCAL)
    assert reference is not None and reference.text == "Hello from the vtt."

    # Episode Two's only transcript 404s: the episode is still listed, its reference is None.
    two = feed.episodes[1]
    assert two.title == "Episode Two"
    assert fetch_episode_reference(two, limits=LOCAL) is None
    assert http_server.hits["/t/2.vtt"] == 1
    assert fetch_episode_reference(feed.episodes[2], limits=LOCAL) is None  # links none at all


def test_unparseable_transcript_gives_none(http_server: LocalHTTPServer) -> None:
    http_server.route("/t/2.vtt", Reply(b"   \n", content_type="text/vtt"))
    feed = parse_feed(rss("S", _items(http_server)), "http://x/feed")
    assert fetch_episode_reference(feed.episodes[1], limits=LOCAL) is None


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "page",
    [
        b"<!DOCTYPE html><html><head><title>Shop</title><body><p>Buy<br>now</body></html>",
        b"<html xmlns='http://www.w3.org/1999/xhtml'><body><p>well-formed</p></body></html>",
    ],
)
def test_html_page_is_not_a_feed(http_server: LocalHTTPServer, page: bytes) -> None:
    url = http_server.route("/page", Reply(page, content_type="text/html"))
    with pytest.raises(FeedError, match=rf"^{re.escape(url)} is not an RSS or Atom feed"):
        fetch_feed(url, **FAST)


def test_feed_without_audio_enclosures(http_server: LocalHTTPServer) -> None:
    items = [Item("PDF", "g1", ("http://x/n.pdf", "application/pdf")), Item("Text", "g2", None)]
    url = http_server.route("/noaudio.xml", rss("S", items))
    with pytest.raises(FeedError, match=rf"feed {re.escape(url)} has no item with an audio") as e:
        fetch_feed(url, **FAST)
    assert "'PDF': enclosure is not audio (application/pdf)" in str(e.value)


def test_feed_without_items() -> None:
    with pytest.raises(FeedError, match="feed http://x/feed has no items"):
        parse_feed(rss("Empty", []), "http://x/feed")


def test_404_is_not_retried(http_server: LocalHTTPServer) -> None:
    url = http_server.url("/missing.xml")
    with pytest.raises(FeedError, match=rf"cannot fetch feed {re.escape(url)}: HTTP 404"):
        fetch_feed(url, **FAST)
    assert http_server.hits["/missing.xml"] == 1


def test_500_then_200_is_retried(http_server: LocalHTTPServer) -> None:
    url = http_server.route(
        "/flaky.xml", Reply(b"oops", status=500), rss("Flaky", _items(http_server))
    )
    feed = fetch_feed(url, **FAST)
    assert feed.title == "Flaky" and len(feed.episodes) == 3
    assert http_server.hits["/flaky.xml"] == 2


def test_persistent_500_fails_after_retries(http_server: LocalHTTPServer) -> None:
    url = http_server.route("/down.xml", Reply(b"down", status=503))
    with pytest.raises(FeedError, match=rf"cannot fetch feed {re.escape(url)}: HTTP 503.*3 att"):
        fetch_feed(url, **FAST)
    assert http_server.hits["/down.xml"] == 3


def test_timeout_fails_after_retries(http_server: LocalHTTPServer) -> None:
    url = http_server.route("/slow.xml", Reply(rss("S", []), delay_s=1.0))
    with pytest.raises(FeedError, match=rf"cannot fetch feed {re.escape(url)}: timed out"):
        fetch_feed(
            url,
            limits=FetchLimits(read_timeout_s=0.2, allow_private_networks=True),
            retries=1,
            backoff_s=0.01,
        )
    assert http_server.hits["/slow.xml"] == 2


def test_unreachable_host() -> None:
    with pytest.raises(FeedError, match="cannot fetch feed http://127.0.0.1:9/f.xml: network"):
        fetch_feed("http://127.0.0.1:9/f.xml", **FAST)


def test_xml_bomb_is_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;">]>'
        b'<rss version="2.0"><channel><title>&c;</title></channel></rss>'
    )
    with pytest.raises(FeedError, match="feed http://x/bomb declares XML entities.*unsafe"):
        parse_feed(bomb, "http://x/bomb")


def test_local_feed_file(tmp_path: Path) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(rss("Local", [Item("E", "g", ("http://x/e.mp3", "audio/mpeg"))]))
    feed = fetch_feed(str(path))
    assert feed.episodes[0].guid == "g"
    assert feed.url == str(path.resolve())  # ids must not depend on the working directory
    with pytest.raises(FeedError, match="feed file not found: .*nope.xml"):
        fetch_feed(str(tmp_path / "nope.xml"))
