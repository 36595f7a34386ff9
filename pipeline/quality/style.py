"""The transcript's style: ``clean`` takes out what a publisher's transcript leaves out.

A clean transcript (the publisher's, and what openai-whisper's ``transcribe()`` writes when it
conditions each window on its own earlier text) has no fillers. Chunks decoded cold write
some ("um", and "you know" as a parenthetical), which a clean reference counts as insertions.
Measured on longform-dev (BENCHMARKS.md, issue 13) against the two other ways to ask for it:
a clean sentence as the prompt of every window (fewer fillers, but tiny.en then skips words)
and conditioning on earlier text in parallel (the same trade, smaller); the filter alone
removes insertions without costing a word.

Only words that are fillers whatever the sentence are taken out: "um", "uh", "erm", and
"you know" where it is not the verb ("do you know", "you know what", "if you know how",
"as you know" stay). The words are taken out of the segment's timed words too, so the
text and the words still agree.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from pipeline.core.types import ChunkTranscript, Segment, Word

# Said on their own, fillers in any sentence.
_FILLERS = frozenset({"um", "umm", "uh", "uhh", "erm"})
# "you know" is the verb after these ("do you know", "if you know", "as you know") ...
_KNOW_VERB_BEFORE = frozenset(
    {"do", "don't", "did", "didn't", "does", "if", "as", "what", "whether", "would", "should",
     "could", "will", "may", "might", "can", "let", "than", "because", "whom", "who"}
)  # fmt: skip
# ... and before these, unless a comma closes "you know," first ("you know what I mean").
_KNOW_VERB_AFTER = frozenset(
    {"what", "how", "why", "who", "where", "when", "whether", "if", "that", "it", "this",
     "him", "her", "them", "me", "us", "about", "each", "everyone", "everybody", "anything",
     "something", "someone", "nothing", "more", "better", "exactly"}
)  # fmt: skip
_WORD = re.compile(r"[a-z']+")


def _bare(text: str) -> str:
    """A word as compared: lower case, without surrounding punctuation."""
    match = _WORD.search(text.lower().replace("\u2019", "'"))
    return match.group(0) if match else ""


def _closed(text: str) -> bool:
    """Whether a word ends on punctuation that closes a clause."""
    return text.rstrip()[-1:] in {",", ".", "?", "!", ";", ":"}


def filler_positions(words: Sequence[str]) -> set[int]:
    """Positions of the filler words among ``words`` (as Whisper writes them: leading space,
    punctuation attached), for the clean style."""
    bare = [_bare(w) for w in words]
    out: set[int] = set()
    for i, b in enumerate(bare):
        if b in _FILLERS:
            out.add(i)
        if b != "you" or i + 1 >= len(bare) or bare[i + 1] != "know":
            continue
        before = bare[i - 1] if i > 0 and not _closed(words[i - 1]) else ""
        after = bare[i + 2] if i + 2 < len(bare) else ""
        parenthetical = _closed(words[i + 1]) or after not in _KNOW_VERB_AFTER
        if before not in _KNOW_VERB_BEFORE and not _closed(words[i]) and parenthetical:
            out.update((i, i + 1))
    return out


def _join(pieces: Sequence[str], capital: bool) -> str:
    text = "".join(pieces).strip()
    if capital and text[:1].islower():
        text = text[0].upper() + text[1:]
    return text


def _lead(text: str) -> str:
    """The whitespace a segment's text starts with (kept as the engine wrote it)."""
    return text[: len(text) - len(text.lstrip())]


def _tokens(text: str) -> list[str]:
    """A segment's text as words with their leading space, as Whisper's words are."""
    return re.findall(r"\s*\S+", text)


def clean_segment(segment: Segment) -> Segment | None:
    """The segment without its fillers; None when nothing else was said in it."""
    if segment.words:
        words = list(segment.words)
        drop = filler_positions([w.text for w in words])
        if not drop:
            return segment
        kept: list[Word] = [w for i, w in enumerate(words) if i not in drop]
        if not any(w.text.strip() for w in kept):
            return None
        capital = 0 in drop and words[0].text.strip()[:1].isupper()
        text = _join([w.text for w in kept], capital)
        if text and kept[0].text.strip() != text.split()[0]:  # capitalised: keep words in step
            kept[0] = dataclasses.replace(kept[0], text=" " + text.split()[0])
        return dataclasses.replace(
            segment, text=_lead(segment.text) + text, words=tuple(kept),
            start=max(segment.start, kept[0].start),
        )  # fmt: skip
    pieces = _tokens(segment.text)
    drop = filler_positions(pieces)
    if not drop:
        return segment
    kept_text = [p for i, p in enumerate(pieces) if i not in drop]
    if not any(p.strip() for p in kept_text):
        return None
    capital = 0 in drop and pieces[0].strip()[:1].isupper()
    return dataclasses.replace(segment, text=_lead(segment.text) + _join(kept_text, capital))


def apply_style(transcript: ChunkTranscript) -> tuple[ChunkTranscript, int]:
    """The chunk in the style it was transcribed for (its options' ``style``; verbatim, or
    an older result without one, is left as it is), and how many words were taken out."""
    if transcript.options.get("style") != "clean":
        return transcript, 0
    segments: list[Segment] = []
    removed = 0
    for seg in transcript.segments:
        before = len(_tokens(seg.text))
        cleaned = clean_segment(seg) if seg.text.strip() else seg
        if cleaned is None:
            removed += before
            continue
        removed += before - len(_tokens(cleaned.text))
        segments.append(cleaned)
    if not removed:
        return transcript, 0
    return dataclasses.replace(transcript, segments=tuple(segments)), removed
