"""The clean style: fillers out of the text and its timed words, "you know" the verb kept;
with the real tiny.en on an espeak-ng fixture (tests/fixtures/fillers.mp3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.asr.options import TranscribeOptions
from pipeline.core.types import ChunkTranscript, ModelInfo, Segment, Word
from pipeline.episode import run_episode
from pipeline.quality.score import normalize_words
from pipeline.quality.style import apply_style, clean_segment, filler_positions


def _fillers(text: str) -> list[str]:
    words = [" " + w for w in text.split()]
    return [words[i].strip() for i in sorted(filler_positions(words))]


@pytest.mark.parametrize(
    ("text", "fillers"),
    [
        ("as I look to 2017 and you know we look at what", ["you", "know"]),
        ("around, you know, the US election", ["you", "know,"]),
        ("surprising, but you know, the every single", ["you", "know,"]),
        ("You know dig through everything", ["You", "know"]),
        ("the service is, um, easy", ["um,"]),
        ("It's hard, you know?", ["you", "know?"]),
        ("that's been you know amazing to see", ["you", "know"]),
        ("it was the you know biggest day", ["you", "know"]),
        ("It scared the you know what out of me.", []),
        ("He was being you know who.", []),
        # "you know" the verb, whenever the sentence does not show it is the filler
        ("Do you know what the answer is?", []),
        ("If you know how it works", []),
        ("As you know, we grew.", []),
        ("you know what I mean", []),
        ("I want you to know that", []),
        ("Thank you. Know your audience.", []),
        ("I think you know the answer.", []),
        ("I just think you know the superpower", []),
        ("You know John?", []),
        ("you know my name", []),
        ("Now you know.", []),
        ("I know you know.", []),
        ("The people that you know are here.", []),
        ("Just so you know, it's late.", []),
        ("I think you know we should go.", []),
        ("As many of you know the plan changed.", []),
        ("The thing is you know the answer.", []),
        # a stutter is said once; a word twice that can be grammar stays
        ("You know the the US election and and the", ["the", "and"]),
        ("and we we did", ["we"]),
        ("Take vitamin A a day.", []),  # a letter, then the article
        ("After World War I I think", []),
        ("it comes down to to be honest", []),
        ('He said "the the" twice.', []),  # a quotation, not a stutter
        ("the fact that that happened", []),
        ("what it is is hard", []),
        ("I told you you could", []),
        ("and, and then", []),
        ("bye bye", []),
        # hyphenated words are words
        ("Uh-huh.", []),
        ("Uh-oh, that broke.", []),
    ],
)
def test_fillers_are_found_and_the_verb_is_kept(text: str, fillers: list[str]) -> None:
    assert _fillers(text) == fillers


def _segment(text: str, timed: bool = True) -> Segment:
    words = tuple(Word(float(i), i + 0.5, " " + w, 0.9) for i, w in enumerate(text.split()))
    return Segment(0.0, float(len(words)), text, 3, words=words if timed else None)


def test_a_clean_segment_keeps_its_words_in_step_with_its_text() -> None:
    seg = clean_segment(_segment("You know dig through everything, you know, today, um."))
    assert seg is not None
    assert seg.text == "Dig through everything, today."  # capital and full stop carried
    assert seg.words is not None
    assert "".join(w.text for w in seg.words).strip() == seg.text
    assert (seg.start, seg.end) == (2.0, 7.5)  # from the first word left to the last one
    untimed = clean_segment(_segment("and, um, you know we look", timed=False))
    assert untimed is not None and untimed.text == "and, we look"
    assert clean_segment(_segment("Um, you know.")) is None
    plain = _segment("Do you know the way?")
    assert clean_segment(plain) is plain


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("It's fine, you know.", "It's fine."),
        ("It's hard, you know?", "It's hard."),  # a tag, not a question
        ("Well, um.", "Well."),
        ("That's it. Um, so we went.", "That's it. So we went."),
        ("Was it, uh, you?", "Was it, you?"),
        ("We need eggs, milk, um, bread.", "We need eggs, milk, bread."),  # a list stays one
        ("I went to Paris, uh, France.", "I went to Paris, France."),
    ],
)
def test_a_sentence_keeps_its_end_and_its_capital(text: str, clean: str) -> None:
    for timed in (True, False):
        seg = clean_segment(_segment(text, timed))
        assert seg is not None and seg.text == clean
        again = clean_segment(seg)  # cleaning a clean text changes nothing
        assert again is seg


def test_the_chunk_is_put_in_the_style_it_was_transcribed_for() -> None:
    segments = (_segment("Well, you know, we grew."), _segment("Uh."))

    def chunk(options: dict[str, str]) -> ChunkTranscript:
        info = ModelInfo("tiny.en", "x", "test", Path("m"))
        return ChunkTranscript(3, "x", 0.0, 5.0, segments, info, options, 0.0)

    clean, removed = apply_style(chunk({"style": "clean"}))
    assert [s.text for s in clean.segments] == ["Well, we grew."]
    assert removed == 3
    for options in ({"style": "verbatim"}, {}):  # and a result from before styles were applied
        assert apply_style(chunk(options)) == (chunk(options), 0)


@pytest.mark.slow
def test_clean_takes_the_filler_out_of_a_real_transcript(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    texts = {}
    for style in ("verbatim", "clean"):
        result = run_episode(
            str(fixtures_dir / "fillers.mp3"),
            transcribe_options=TranscribeOptions(style=style),
            episode_id=f"fillers-{style}",
            audio_root=tmp_path / "audio",
            transcripts_root=tmp_path / "transcripts",
        )
        texts[style] = normalize_words(result.transcript.text)
        assert result.transcript.provenance["transcribe_options"]["style"] == style
        for seg in result.transcript.segments:  # words and text agree
            assert seg.words is not None
            assert normalize_words("".join(w.text for w in seg.words)) == normalize_words(seg.text)
    verbatim, clean = texts["verbatim"], texts["clean"]
    pairs = [i for i in range(len(verbatim) - 1) if verbatim[i : i + 2] == ["you", "know"]]
    assert len(pairs) == 2  # the filler and the verb, as tiny.en hears them
    filler = pairs[0]
    assert verbatim[pairs[1] - 1] == "do"
    assert clean == verbatim[:filler] + verbatim[filler + 2 :]
