"""Generated RSS 2.0 and Atom feeds for the feed and catalog tests."""

from __future__ import annotations

from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

PODCAST_NS = "https://podcastindex.org/namespace/1.0"


@dataclass(frozen=True)
class Item:
    """One feed item; ``enclosure`` is (url, MIME type) or None for an item without one."""

    title: str
    guid: str | None
    enclosure: tuple[str, str] | None
    transcripts: tuple[tuple[str, str], ...] = ()  # (url, MIME type)
    published: str = "Mon, 02 Jun 2025 10:00:00 GMT"


def _transcript_tags(item: Item) -> str:
    return "".join(
        f'<podcast:transcript url={quoteattr(url)} type={quoteattr(kind)} language="en"/>'
        for url, kind in item.transcripts
    )


def rss(title: str, items: list[Item]) -> bytes:
    """An RSS 2.0 feed with the Podcasting 2.0 namespace."""
    body = []
    for it in items:
        guid = f'<guid isPermaLink="false">{it.guid}</guid>' if it.guid else ""
        enclosure = (
            f"<enclosure url={quoteattr(it.enclosure[0])} type={quoteattr(it.enclosure[1])} "
            'length="1000"/>'
            if it.enclosure
            else ""
        )
        body.append(
            f"<item><title>{it.title}</title>{guid}{enclosure}"
            f"<pubDate>{it.published}</pubDate>{_transcript_tags(it)}</item>"
        )
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<rss version="2.0" xmlns:podcast="{PODCAST_NS}">'
        f"<channel><title>{title}</title><link>http://example.org/</link>"
        f"<description>test feed</description>{''.join(body)}</channel></rss>"
    ).encode()


def atom(title: str, items: list[Item]) -> bytes:
    """An Atom feed whose entries carry enclosures as rel="enclosure" links."""
    body = []
    for it in items:
        enclosure = (
            f'<link rel="enclosure" href={quoteattr(it.enclosure[0])} '
            f"type={quoteattr(it.enclosure[1])}/>"
            if it.enclosure
            else ""
        )
        body.append(
            f"<entry><title>{it.title}</title><id>{it.guid}</id>"
            f"<updated>2025-06-02T10:00:00Z</updated>{enclosure}{_transcript_tags(it)}</entry>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom" xmlns:podcast="{PODCAST_NS}">'
        f"<title>{title}</title><id>urn:test:{title}</id><updated>2025-06-02T10:00:00Z</updated>"
        f"{''.join(body)}</feed>"
    ).encode()
