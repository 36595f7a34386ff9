"""The report's speaker section: WER per reference speaker, wrongly labelled turns and the
timeline, on transcripts whose segments carry speakers (what the report stage is handed) against
a small conversation-dev style "label: text" reference; and the files finish_episode writes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.core.types import ChunkTranscript, ModelInfo, Segment, Transcript
from pipeline.episode import finish_episode, prepare_episode
from pipeline.quality.report import (
    ReportInput,
    load_report_input,
    render_html_report,
    render_markdown_report,
)
from pipeline.quality.score import align_words, score_transcript
from pipeline.quality.speaker_report import speaker_report, timeline_svg
from pipeline.quality.speakers import add_speaker_scores
from pipeline.quality.timing import read_parts
from pipeline.sources.reference import read_reference

FIXTURES = Path(__file__).parent / "fixtures"
MODEL = ModelInfo(name="tiny.en", sha256="ab" * 32, source="test data", path=Path("t.pt"))

# tests/fixtures/conversation.txt, said by a diarized transcript: "okay" (call1-agent's) is
# labelled as the caller, and "thanks" is heard as "thank".
SEGMENTS = [
    (0.0, 4.0, "SPEAKER_1", "Hello, this is Harper Valley Bank. How can I help you today?"),
    (4.5, 7.0, "SPEAKER_2", "Hi, I need to check my account balance."),
    (7.5, 8.0, "SPEAKER_2", "Okay."),
    (8.2, 10.0, "SPEAKER_1", "Which account would you like to check?"),
    (10.5, 12.0, "SPEAKER_2", "My savings account, please."),
    (13.0, 16.0, "SPEAKER_3", "Thank you for calling. Is there anything else?"),
    (16.5, 18.0, "SPEAKER_4", "No, that is all. Thank."),
]


def _transcript(speakers: bool = True) -> Transcript:
    segs = tuple(
        Segment(a, b, text, 0, speaker=who if speakers else None) for a, b, who, text in SEGMENTS
    )
    chunk = ChunkTranscript(0, "0" * 64, 0.0, 20.0, segs, MODEL, {}, 0.5)
    return Transcript("conversation", 20.0, segs, (chunk,), {"code_version": "test"})


@pytest.fixture(scope="module")
def reference():  # type: ignore[no-untyped-def]
    return read_reference(FIXTURES / "conversation.txt")


def test_wer_per_speaker_and_the_pairs_cpwer(reference) -> None:  # type: ignore[no-untyped-def]
    t = _transcript()
    report = speaker_report(t, align_words(t, reference.text), reference.turns)
    assert report is not None
    rows = {
        s.speaker: (s.counts.ref_words, s.wer, s.label, s.pair and s.pair.errors)
        for s in report.speakers
    }
    assert rows == {
        # 20 words; "okay" was said but went to SPEAKER_2's words: one deletion in the pair
        "call1-agent": (20, 0.0, "SPEAKER_1", 1),
        "call1-caller": (12, 0.0, "SPEAKER_2", 1),  # ... and one insertion in this one
        "call2-agent": (8, 0.0, "SPEAKER_3", 0),
        "call2-caller": (5, 0.2, "SPEAKER_4", 1),  # thanks -> thank
    }
    # The pairs' errors add up to cpWER's.
    score = add_speaker_scores(score_transcript(t, reference.text), t, reference.turns)
    assert score.speakers is not None
    assert sum(s.pair.errors for s in report.speakers if s.pair) == score.speakers.counts.errors


def test_wrongly_labelled_turns(reference) -> None:  # type: ignore[no-untyped-def]
    t = _transcript()
    report = speaker_report(t, align_words(t, reference.text), reference.turns)
    assert report is not None
    assert (report.segments_labelled, report.segments_wrong) == (7, 1)
    (wrong,) = report.wrong_turns
    assert (wrong.start, wrong.end, wrong.text) == (7.5, 8.0, "Okay.")
    assert (wrong.label, wrong.labelled_as, wrong.speaker) == (
        "SPEAKER_2",
        "call1-caller",
        "call1-agent",
    )
    assert [s.wrong for s in report.hypothesis_spans] == [k == 2 for k in range(7)]


def test_consecutive_wrong_segments_are_one_turn(reference) -> None:  # type: ignore[no-untyped-def]
    # Both of call1-agent's last lines labelled as the caller: one wrong turn, 7.5-10.0 s.
    segs = list(_transcript().segments)
    segs[3] = Segment(8.2, 10.0, segs[3].text, 0, speaker="SPEAKER_2")
    t = _transcript()
    t = Transcript(t.episode_id, t.duration_s, tuple(segs), t.chunks, t.provenance)
    report = speaker_report(t, align_words(t, reference.text), reference.turns)
    assert report is not None
    turns = [(w.start, w.end, w.speaker) for w in report.wrong_turns]
    assert (7.5, 10.0, "call1-agent") in turns


def test_reference_lane_follows_the_aligned_words(reference) -> None:  # type: ignore[no-untyped-def]
    t = _transcript()
    report = speaker_report(t, align_words(t, reference.text), reference.turns)
    assert report is not None
    spans = report.reference_spans
    assert [s.speaker for s in spans] == [turn.speaker for turn in reference.turns]
    # Each reference turn (the agent's "okay" and next line are one turn) lies inside the
    # segments that say it.
    bounds = [(0.0, 4.0), (4.5, 7.0), (7.5, 10.0), (10.5, 12.0), (13.0, 16.0), (16.5, 18.0)]
    for span, (a, b) in zip(spans, bounds, strict=True):
        assert a <= span.start <= span.end <= b


def test_unlabelled_transcript_still_gets_wer_per_speaker(reference) -> None:  # type: ignore[no-untyped-def]
    t = _transcript(speakers=False)
    report = speaker_report(t, align_words(t, reference.text), reference.turns)
    assert report is not None
    assert [s.label for s in report.speakers] == [None] * 4
    assert report.segments_labelled == 0 and not report.wrong_turns
    assert not report.hypothesis_spans and len(report.reference_spans) == 6


def test_no_speakers_on_either_side_no_section() -> None:
    t = _transcript(speakers=False)
    text = "\n".join(s[3] for s in SEGMENTS)
    assert speaker_report(t, align_words(t, text), ()) is None
    page = render_html_report(ReportInput(t, score_transcript(t, text), None, text))
    assert "speaker-timeline" not in page and "<h2>Speakers" not in page


def test_html_report_has_the_speaker_section(reference) -> None:  # type: ignore[no-untyped-def]
    t = _transcript()
    score = add_speaker_scores(score_transcript(t, reference.text), t, reference.turns)
    data = ReportInput(t, score, None, reference.text, 1.0, reference_turns=reference.turns)
    page = render_html_report(data)
    assert '<svg id="speaker-timeline"' in page
    assert "WER per reference speaker" in page
    assert "Wrong speaker labels: 1 of 7 segments, 1 turns" in page
    assert "SPEAKER_2 → call1-caller" in page and "20.00%" in page
    # Self-contained: nothing fetched from elsewhere.
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "<script" not in page and "<link" not in page
    md = render_markdown_report(data)
    assert "## Speakers" in md
    assert "| call2-caller | 5 | 20.00% | SPEAKER_4 | 20.00% |" in md
    assert "Wrong speaker labels: 1 of 7 segments" in md


def test_transcript_speakers_without_reference_give_a_timeline() -> None:
    t = _transcript()
    data = ReportInput(t, None, None)
    report = data.speaker_section
    assert report is not None and not report.speakers and not report.reference_spans
    lanes = [s.lane for s in report.hypothesis_spans]
    assert lanes == [s[2] for s in SEGMENTS]
    svg = timeline_svg(report, t.duration_s)
    assert svg.count("<rect") == 7 and ">SPEAKER_4<" in svg
    page = render_html_report(data)
    assert "speaker-timeline" in page and "WER per reference speaker" not in page


# --- finish_episode: the files, and the artifact rebuilt from them ---------------------------


def test_finish_episode_keeps_turns_for_the_report_and_the_artifact(tmp_path: Path) -> None:
    manifest = prepare_episode(str(FIXTURES / "parts.mp3"), "parts", tmp_path / "audio")
    reference = read_reference(FIXTURES / "parts.txt")  # Host / Guest
    parts = read_parts(FIXTURES / "parts.tsv")
    # One segment per turn at its true time; "Right!" (the host's) labelled as the guest.
    labels = ["SPEAKER_1", "SPEAKER_2", "SPEAKER_2", "SPEAKER_2"]
    (chunk,) = manifest.chunks
    segs = tuple(
        Segment(p.start_s, min(p.end_s, chunk.end_s), turn.text, chunk.index, speaker=label)
        for p, turn, label in zip(parts, reference.turns, labels, strict=True)
    )
    ct = ChunkTranscript(chunk.index, chunk.sha256, chunk.start_s, chunk.end_s, segs, MODEL, {}, 1)
    out = tmp_path / "transcripts" / "parts"
    _t, score, files = finish_episode(manifest, [ct], reference, out)
    assert score is not None and score.wer == 0.0
    assert score.speakers is not None and score.speakers.cpwer == pytest.approx(2 / 28)
    turns = json.loads((out / "reference.turns.json").read_text())
    assert [t["speaker"] for t in turns] == ["Host", "Guest", "Host", "Guest"]
    per_speaker = json.loads(files["score.json"].read_text())["per_speaker"]
    assert per_speaker["labels"] == {"SPEAKER_1": "Host", "SPEAKER_2": "Guest"}
    assert per_speaker["segments_wrong"] == 1
    assert per_speaker["wrong_turns"][0]["text"] == "Right!"
    # The Prefect artifact is this markdown, made from the folder alone.
    md = render_markdown_report(load_report_input(out))
    assert "## Speakers" in md and "| Host | 10 | 0.00% | SPEAKER_1 | 10.00% |" in md
    assert "speaker-timeline" in files["report.html"].read_text()
    # A later run without speakers leaves no stale turns behind.
    plain = read_reference(FIXTURES / "speech.txt")
    finish_episode(manifest, [ct], plain, out)
    assert not (out / "reference.turns.json").exists()
    assert "## Speakers" not in render_markdown_report(load_report_input(out))
