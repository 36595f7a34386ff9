"""Podcasting 2.0 <podcast:person> tags: channel and item lists, and what a hostile feed sends."""

from __future__ import annotations

import pytest

from pipeline.core.errors import OptionsError
from pipeline.core.types import Person
from pipeline.sources.feed import (
    MAX_PERSON_NAME,
    MAX_PERSONS,
    format_person,
    parse_feed,
    parse_person,
)

NS = "https://podcastindex.org/namespace/1.0"


def _rss(channel_extra: str, items: list[tuple[str, str]]) -> bytes:
    """An RSS feed: ``channel_extra`` inside <channel>, each item as (guid, extra XML)."""
    body = "".join(
        f"<item><title>Ep {guid}</title><guid>{guid}</guid>"
        f'<enclosure url="https://example.org/{guid}.mp3" type="audio/mpeg" length="1"/>'
        f"{extra}</item>"
        for guid, extra in items
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0" xmlns:podcast="{NS}"><channel><title>S</title>'
        f"{channel_extra}{body}</channel></rss>"
    ).encode()


def _person(name: str, **attrs: str) -> str:
    attributes = "".join(f' {k}="{v}"' for k, v in attrs.items())
    return f"<podcast:person{attributes}>{name}</podcast:person>"


def test_channel_persons_apply_to_items_without_their_own() -> None:
    channel = _person("Alice Smith", href="https://example.org/alice") + _person(
        "Bob", role="Cohost", group="Cast"
    )
    items = [("a", ""), ("b", _person("Carol Jones", role="guest"))]
    feed = parse_feed(_rss(channel, items), "http://x/feed")

    a, b = feed.episodes
    assert a.persons == (
        Person("Alice Smith", "host", "cast", "https://example.org/alice"),
        Person("Bob", "cohost", "cast", None),  # roles are case-insensitive: kept in lower case
    )
    # The item's own list replaces the channel's (the namespace says so): no Alice, no Bob.
    assert b.persons == (Person("Carol Jones", "guest", "cast", None),)


def test_atom_feed_persons() -> None:
    data = (
        f'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xmlns:podcast="{NS}">'
        f"<title>S</title><id>urn:s</id>{_person('Alice')}"
        '<entry><title>E</title><id>e1</id><link rel="enclosure" '
        'href="https://example.org/e1.mp3" type="audio/mpeg"/></entry></feed>'
    ).encode()
    (episode,) = parse_feed(data, "http://x/atom").episodes
    assert episode.persons == (Person("Alice"),)


def test_feed_without_persons() -> None:
    (episode,) = parse_feed(_rss("", [("a", "")]), "http://x/feed").episodes
    assert episode.persons == ()


def test_hostile_persons_are_cleaned_dropped_and_capped() -> None:
    channel = _person("Chan")
    too_long = "x" * (MAX_PERSON_NAME + 1)
    crowd = "".join(_person(f"Person {i}") for i in range(MAX_PERSONS + 5))
    items = [
        # empty, blank and over-long names are dropped; spaces and control characters tidied;
        # a second "alice" is the same person; a local or script href is not kept
        (
            "a",
            _person("")
            + _person("   ")
            + _person(too_long)
            + _person("  Alice \t\n  Smith ", role="  GUEST  ", href="file:///etc/passwd")
            + _person("ALICE SMITH")
            + _person("Dan", role="r" * 60, href="javascript:alert(1)"),
        ),
        ("b", crowd),
        # only unusable persons: as if it listed none, so the channel's apply
        ("c", _person("") + _person(too_long)),
    ]
    a, b, c = parse_feed(_rss(channel, items), "http://x/feed").episodes
    assert a.persons == (Person("Alice Smith", "guest"), Person("Dan", "host"))
    assert [p.name for p in b.persons] == [f"Person {i}" for i in range(MAX_PERSONS)]
    assert c.persons == (Person("Chan"),)


def test_persons_of_a_duplicate_guid_come_from_the_first_item() -> None:
    items = [("a", _person("First")), ("a", _person("Second"))]
    feed = parse_feed(_rss("", items), "http://x/feed")
    assert [e.persons for e in feed.episodes] == [(Person("First"),)]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Alice Smith:host", Person("Alice Smith", "host")),
        ("Bob:Guest", Person("Bob", "guest")),
        ("Carol", Person("Carol", "host")),
        ("  Dan  Brown :", Person("Dan Brown", "host")),
    ],
)
def test_parse_person(given: str, expected: Person) -> None:
    assert parse_person(given) == expected
    assert parse_person(format_person(expected)) == expected


@pytest.mark.parametrize("given", ["", ":host", "   :guest", "x" * (MAX_PERSON_NAME + 1)])
def test_parse_person_refuses_no_name(given: str) -> None:
    with pytest.raises(OptionsError, match=r"give a name of 1 to 200 characters"):
        parse_person(given)
