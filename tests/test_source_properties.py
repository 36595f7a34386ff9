"""Properties of the source layer for any input (hypothesis): the feed parser raises nothing but
FeedError, and every id podscribe makes is a safe, stable folder name, distinct for distinct
inputs even when they differ only in characters a slug drops."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.core.errors import FeedError
from pipeline.core.store import MAX_ID_LEN, check_episode_id, slugify
from pipeline.sources.feed import episode_id_for_item, feed_id_for, parse_feed
from pipeline.sources.fetch import episode_id_for

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Pieces of real and hostile feeds, shuffled into documents more likely to get past the XML
# parser than random bytes are.
FRAGMENTS = [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<?xml version="1.0" encoding="utf-16"?>',
    '<rss version="2.0">',
    "</rss>",
    "<channel>",
    "</channel>",
    "<item>",
    "</item>",
    "<title>T</title>",
    "<guid>../../x</guid>",
    '<enclosure url="http://e.org/a.mp3" type="audio/mpeg"/>',
    '<enclosure url="file:///etc/passwd" type="audio/mpeg"/>',
    '<enclosure type="audio/mpeg"/>',
    "<pubDate>Mon, 99 Foo 2025</pubDate>",
    '<feed xmlns="http://www.w3.org/2005/Atom">',
    "</feed>",
    "<entry>",
    "</entry>",
    '<link rel="enclosure" href="http://e.org/b.mp3"/>',
    '<podcast:transcript url="http://e.org/t.vtt" type="text/vtt"/>',
    '<!DOCTYPE rss [<!ENTITY a "aaaa">]>',
    "&a;",
    "&amp;",
    "<![CDATA[x]]>",
    "\x00",
    "\udcff",
    "é",
]


@SETTINGS
@given(st.binary(max_size=4096))
def test_feed_parser_raises_only_feed_error_on_any_bytes(data: bytes) -> None:
    with contextlib.suppress(FeedError):
        parse_feed(data, "http://x/feed")


@SETTINGS
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=20), max_size=30))
@example([FRAGMENTS[i] for i in (2, 4, 6, 9, 10, 7, 5, 3)])  # a well-formed one-episode feed
def test_feed_parser_raises_only_feed_error_on_feedlike_documents(parts: list[str]) -> None:
    data = "".join(parts).encode("utf-8", "surrogatepass")
    try:
        feed = parse_feed(data, "http://x/feed", max_items=3)
    except FeedError:
        return
    assert 0 < len(feed.episodes) <= 3
    for episode in feed.episodes:
        assert check_episode_id(episode.episode_id) == episode.episode_id
        assert episode.audio_url.lower().startswith(("http://", "https://"))


def _assert_safe(slug: str, max_len: int = MAX_ID_LEN) -> None:
    assert slug and slug not in (".", "..")
    assert not any(bad in slug for bad in ("/", "\\", "\x00"))
    assert len(slug) <= max_len
    assert check_episode_id(slug) == slug


@SETTINGS
@given(st.text(), st.integers(min_value=1, max_value=100))
def test_slugify_is_safe_and_stable(text: str, max_len: int) -> None:
    slug = slugify(text, max_len=max_len)
    _assert_safe(slug, max(max_len, len("episode")))
    assert slug == slugify(text, max_len=max_len)


@SETTINGS
@given(st.text(), st.text())
def test_source_ids_are_safe_stable_and_distinct(a: str, b: str) -> None:
    ids = []
    for text in (a, b):
        url = "https://e.org/" + text  # the whole string is the key: ids differ when URLs do
        _assert_safe(episode_id_for(url))
        assert episode_id_for(url) == episode_id_for(url)
        _assert_safe(episode_id_for(text))  # as a local path: any string, even with NUL
        ids.append(episode_id_for(url))
    assert (ids[0] == ids[1]) == (a == b)


@SETTINGS
@given(st.text(), st.text(), st.text())
def test_feed_and_item_ids_are_safe_stable_and_distinct(origin: str, guid: str, title: str) -> None:
    item = episode_id_for_item(origin, guid, title)
    feed = feed_id_for(origin, title)
    for made in (item, feed):
        _assert_safe(made)
    assert item == episode_id_for_item(origin, guid, title)
    # Same title, GUIDs that differ only in what the slug drops: still two ids.
    assert episode_id_for_item(origin, guid + "/", title) != item
    assert episode_id_for_item(origin, guid.replace("/", "\\") + "..", title) != item
    assert feed_id_for(origin + "\x00", title) != feed
