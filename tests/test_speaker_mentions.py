"""Naming the diarizer's speakers after a feed's <podcast:person> list, from what they say."""

from __future__ import annotations

import pytest

from pipeline.core.types import Person, Segment, SpeakerTurn, Transcript
from pipeline.quality.speakers import name_speakers_by_mentions, rename_speakers

ALICE, BOB = Person("Alice Smith"), Person("Bob Jones", "guest")


def _turns(*lines: tuple[str | None, str]) -> list[SpeakerTurn]:
    return [SpeakerTurn(speaker, text) for speaker, text in lines]


def test_self_introduction_and_address() -> None:
    turns = _turns(
        ("SPEAKER_1", "Hello and welcome, I'm Alice."),
        ("SPEAKER_2", "Thanks Alice, I’m Bob, glad to be here."),  # a curly apostrophe
        ("SPEAKER_1", "So, Bob, what brings you here?"),
        ("SPEAKER_2", "The weather."),
    )
    naming = name_speakers_by_mentions(turns, [ALICE, BOB])

    assert naming.by == "feed" and naming.candidates == ("Alice Smith", "Bob Jones")
    assert naming.as_dict() == {"SPEAKER_1": "Alice Smith", "SPEAKER_2": "Bob Jones"}
    kinds = sorted((e.label, e.name, e.kind, e.said_by) for e in naming.evidence)
    assert kinds == [
        ("SPEAKER_1", "Alice Smith", "address", "SPEAKER_2"),  # "Thanks Alice" answers S1
        ("SPEAKER_1", "Alice Smith", "self", "SPEAKER_1"),
        ("SPEAKER_2", "Bob Jones", "self", "SPEAKER_2"),
        # "So, Bob, what…" is not at the turn's start: no address there
    ]
    assert [(n.label, n.agreement, n.shared) for n in naming.names] == [
        ("SPEAKER_1", 1.0, 2.0),
        ("SPEAKER_2", 1.0, 1.0),
    ]
    assert naming.agreement == 1.0


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("I am Alice Smith, your host.", "self"),
        ("My name is alice.", "self"),
        ("This is Alice, and you are listening.", "self"),
        ("Alice here, with the news.", "self"),
        ("Welcome, Bob Jones!", "address"),
        ("Bob, tell us more.", "address"),
        ("What do you think, Bob?", "address"),
        ("Hi Bob.", "address"),
    ],
)
def test_each_phrasing(text: str, kind: str) -> None:
    turns = _turns(("A", text), ("B", "Yes."))
    (evidence,) = name_speakers_by_mentions(turns, [ALICE, BOB]).evidence
    assert evidence.kind == kind
    # a self-introduction counts for its speaker, an address for the one who answers
    assert evidence.label == ("A" if kind == "self" else "B")


@pytest.mark.parametrize(
    "text",
    [
        "I met Bob yesterday.",  # a name said, but neither introduction nor address
        "This is Alice's favourite.",  # a possessive
        "I'm Alicent.",  # not the word
        "Alice, here's the plan for Bob's book.",  # "Alice, here's": not "Alice here"
    ],
)
def test_mentions_that_are_no_evidence(text: str) -> None:
    turns = _turns(("A", text), ("B", "Right."))
    evidence = name_speakers_by_mentions(turns, [ALICE, BOB]).evidence
    assert [e for e in evidence if e.kind == "self"] == []
    assert all(e.kind == "address" and e.label == "B" for e in evidence)  # "Alice, …" only


def test_no_evidence_leaves_labels_and_records_candidates() -> None:
    turns = _turns(("SPEAKER_1", "Today: weather."), ("SPEAKER_2", "Rain, mostly."))
    naming = name_speakers_by_mentions(turns, [ALICE, BOB])
    assert naming.as_dict() == {} and naming.agreement is None
    assert naming.candidates == ("Alice Smith", "Bob Jones")
    assert [n.agreement for n in naming.names] == [None, None]


def test_conflicting_evidence_gives_the_share() -> None:
    # S1 says it is Alice twice; S2 once calls S1 "Bob" by mistake.
    turns = _turns(
        ("S1", "I'm Alice."),
        ("S2", "Hi Bob."),
        ("S1", "I'm Alice, really."),
    )
    naming = name_speakers_by_mentions(turns, [ALICE, BOB])
    (s1, s2) = naming.names
    assert (s1.name, s1.agreement, s1.shared) == ("Alice Smith", pytest.approx(2 / 3), 3.0)
    assert s2.name is None  # nothing speaks for S2 being anyone
    assert naming.agreement == pytest.approx(2 / 3)


def test_first_name_shared_by_two_people_needs_the_full_name() -> None:
    alice_b = Person("Alice Brown")
    turns = _turns(("S1", "I'm Alice."), ("S2", "And I'm Alice Brown."))
    naming = name_speakers_by_mentions(turns, [ALICE, alice_b])
    assert naming.as_dict() == {"S2": "Alice Brown"}


def test_one_person_one_speaker_takes_the_name_with_the_speech_share() -> None:
    turns = _turns((None, "Intro music words"), ("SPEAKER_1", "Today we talk about rain."))
    naming = name_speakers_by_mentions(turns, [ALICE])
    (only,) = naming.names
    assert (only.name, only.agreement, only.shared) == ("Alice Smith", 5 / 8, 5.0)
    assert [e.kind for e in naming.evidence] == ["only speaker"]


def test_renamed_transcript_uses_feed_names() -> None:
    segments = (
        Segment(0.0, 2.0, "Hello, I'm Alice.", 0, speaker="SPEAKER_1"),
        Segment(2.0, 4.0, "Thanks Alice, I'm Bob.", 0, speaker="SPEAKER_2"),
    )
    transcript = Transcript("ep", 4.0, segments, ())
    turns = [SpeakerTurn(s.speaker, s.text) for s in segments]
    renamed = rename_speakers(transcript, name_speakers_by_mentions(turns, [ALICE, BOB]))
    assert [s.speaker for s in renamed.segments] == ["Alice Smith", "Bob Jones"]
