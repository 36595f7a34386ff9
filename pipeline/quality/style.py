"""The transcript's style: ``clean`` takes out what a publisher's transcript leaves out.

A clean transcript (the publisher's, and what openai-whisper's ``transcribe()`` writes when it
conditions each window on its own earlier text) has no fillers. Chunks decoded cold write
some ("um", and "you know" as a parenthetical), which a clean reference counts as insertions.
Measured on longform-dev (BENCHMARKS.md, issue 13) against the two other ways to ask for it:
a clean sentence as the prompt of every window (fewer fillers, but tiny.en then skips words)
and conditioning on earlier text in parallel (the same trade, smaller); the filter alone
removes insertions without costing a word.

Only words that are fillers whatever the sentence are taken out: "um", "uh", "erm",
"you know" where it is not the verb ("do you know", "you know what", "if you know how",
"as you know" stay), and the second of a stuttered article, conjunction, "of" or pronoun ("the the",
"and and"; "that that" stays: it can be grammar). The words are taken out of the segment's
timed words too, so the text and the words still agree.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from pipeline.core.types import ChunkTranscript, Segment

# Said on their own, fillers in any sentence (a hyphenated "uh-huh" or "uh-oh" is a word).
_FILLERS = frozenset({"um", "umm", "uh", "uhh", "erm"})
# "you know" is the verb after these ("do you know", "as you know", "I think you know we
# should", "the people that you know", "just so you know") ...
_KNOW_VERB_BEFORE = frozenset(
    {"do", "don't", "did", "didn't", "does", "doesn't", "if", "as", "what", "whether", "would",
     "should", "could", "will", "may", "might", "can", "let", "than", "because", "whom", "who",
     "that", "so", "now", "think", "know", "believe", "guess", "hope", "bet", "sure", "i"}
)  # fmt: skip
# ... and before its object ("you know the answer", "you know my name", "you know what").
_KNOW_OBJECT = frozenset(
    {"the", "a", "an", "my", "your", "his", "her", "our", "their", "its", "this", "that",
     "these", "those", "what", "how", "why", "who", "whom", "where", "when", "whether", "if",
     "it", "him", "them", "me", "us", "about", "each", "every", "everyone", "everybody", "all",
     "some", "any", "no", "anything", "something", "someone", "nothing", "more", "better",
     "exactly"}
)  # fmt: skip
# Words that start a new clause: "you know" between two clauses, unmarked by punctuation, is
# the filler ("and you know we look at what we can do").
_CLAUSE_START = frozenset(
    {"i", "we", "they", "he", "she", "it's", "that's", "there's", "we're", "i'm", "they're",
     "you're", "he's", "she's", "we've", "i've", "they've", "there", "so", "and", "but",
     "like"}
)  # fmt: skip
# Written twice in a row, exactly alike, these are a stutter, never the grammar ("the the US
# election", "and and"): clean writes them once. Not "that that" ("the fact that that
# happened"), "is is" ("what it is is"), "you you" ("told you you could"), "to to" ("down to
# to be honest"), "I I" ("World War I I think"), "in in" ("give in in the end"); "A a" is a
# letter, then the article.
_STUTTER = frozenset({"the", "a", "an", "and", "but", "or", "of", "we", "they"})
# After these "you" cannot start a clause, so "you know" is the filler ("that's been you
# know amazing", "the you know"). Not after a preposition: "many of you know that".
_NO_CLAUSE_AFTER = frozenset({"been", "being", "the", "a", "an"})
_PUNCT = ".,?!;:\"'()[]…-‘’“”"
_ENDS = (".", "?", "!", "…")


def _bare(text: str) -> str:
    """A word as compared: lower case, without the punctuation around it."""
    return text.strip().strip(_PUNCT).lower().replace("’", "'")


def _closed(text: str) -> bool:
    """Whether a word ends on punctuation that closes a clause."""
    return text.rstrip()[-1:] in {",", ".", "?", "!", ";", ":", "…"}


def _you_know_is_filler(words: Sequence[str], bare: Sequence[str], i: int) -> bool:
    """Whether "you know" at ``i`` is the filler, not the verb: only where the sentence
    shows it (punctuation or a segment edge around it, or a new clause right after it)."""
    if _closed(words[i]):  # "thank you, know ..."
        return False
    after = bare[i + 2] if i + 2 < len(bare) else ""
    after_word = words[i + 2].strip() if i + 2 < len(words) else ""
    marked_after = _closed(words[i + 1]) or not after
    if i == 0 or _closed(words[i - 1]):  # "..., you know ..." or a segment's first words
        if marked_after:
            return True  # "You know, ...", "..., you know."
        named = after_word[:1].isupper() and after != "i"
        return after not in _KNOW_OBJECT and not named  # "You know John?" is the verb
    if bare[i - 1] in _KNOW_VERB_BEFORE:
        return False
    if bare[i - 1] in _NO_CLAUSE_AFTER:
        return after not in {"what", "who"}  # "the you know what" names something
    if words[i + 1].rstrip().endswith(","):
        return True  # "but you know, the ..."
    return not marked_after and after in _CLAUSE_START  # "Now you know." is the verb


def filler_positions(words: Sequence[str]) -> set[int]:
    """Positions of the filler words among ``words`` (as Whisper writes them: leading space,
    punctuation attached), for the clean style."""
    bare = [_bare(w) for w in words]
    out: set[int] = set()
    for i, b in enumerate(bare):
        if b in _FILLERS:
            out.add(i)
        elif b in _STUTTER and i > 0 and words[i].strip().rstrip(",.;:?!…") == words[i - 1].strip():
            out.add(i)  # the second of "the the" (not of "the, the" nor "the the\"")
        elif (
            b == "you"
            and i + 1 < len(bare)
            and bare[i + 1] == "know"
            and _you_know_is_filler(words, bare, i)
        ):
            out.update((i, i + 1))
    return out


def _tokens(text: str) -> list[str]:
    """A segment's text as words with their leading space, as Whisper's words are."""
    return re.findall(r"\s*\S+", text)


def clean_tokens(tokens: Sequence[str]) -> list[tuple[int, str]]:
    """The tokens left when the fillers are out, as (position in ``tokens``, text): a
    sentence's end mark on a dropped word moves to the word before ("fine, you know." ->
    "fine."), and a word that now starts a sentence gets the capital the dropped one had.
    Repeated until nothing is a filler, so cleaning a clean text changes nothing."""
    kept = list(enumerate(tokens))
    while True:
        texts = [t for _, t in kept]
        drop = filler_positions(texts)
        if not drop:
            return kept
        out: list[tuple[int, str]] = []
        k = 0
        while k < len(kept):
            if k not in drop:
                out.append(kept[k])
                k += 1
                continue
            run_start = k
            while k < len(kept) and k in drop:
                k += 1
            first, last = texts[run_start].strip(), texts[k - 1].rstrip()
            if last.endswith(_ENDS) and out:  # the sentence ends on the previous word now
                pos, prev = out[-1]
                # "It's hard, you know?" asks nothing: the tag's question mark is a full stop.
                mark = "." if last.endswith("?") and _bare(last) == "know" else last[-1]
                out[-1] = (pos, prev.rstrip().rstrip(",;:") + mark)
            starts = not out or out[-1][1].rstrip().endswith(_ENDS)
            if k < len(kept) and starts and first[:1].isupper():
                pos, nxt = kept[k]
                body = nxt.lstrip()
                kept[k] = (pos, nxt[: len(nxt) - len(body)] + body[:1].upper() + body[1:])
                texts[k] = kept[k][1]
        kept = out


def _lead(text: str) -> str:
    """The whitespace a segment's text starts with (kept as the engine wrote it)."""
    return text[: len(text) - len(text.lstrip())]


def clean_segment(segment: Segment) -> Segment | None:
    """The segment without its fillers; None when nothing else was said in it."""
    words = segment.words
    tokens = [w.text for w in words] if words else _tokens(segment.text)
    kept = clean_tokens(tokens)
    if len(kept) == len(tokens):  # nothing was a filler: nothing changed
        return segment
    text = "".join(t for _, t in kept).strip()
    if not text:
        return None
    text = _lead(segment.text) + text
    if not words:
        return dataclasses.replace(segment, text=text)
    new = [dataclasses.replace(words[i], text=t) for i, t in kept]
    spoken = [w for w in new if w.text.strip()]
    return dataclasses.replace(
        segment,
        text=text,
        words=tuple(new),
        start=max(segment.start, spoken[0].start),
        end=min(segment.end, spoken[-1].end),
    )


def apply_style(transcript: ChunkTranscript) -> tuple[ChunkTranscript, int]:
    """The chunk in the style it was transcribed for (its options' ``style``; verbatim, or
    an older result without one, is left as it is), and how many words were taken out."""
    if transcript.options.get("style") != "clean":
        return transcript, 0
    segments: list[Segment] = []
    removed = 0
    for seg in transcript.segments:
        before = len(seg.words) if seg.words else len(_tokens(seg.text))
        cleaned = clean_segment(seg) if seg.text.strip() else seg
        if cleaned is None:
            removed += before
            continue
        after = len(cleaned.words) if cleaned.words else len(_tokens(cleaned.text))
        removed += before - after
        segments.append(cleaned)
    if not removed:
        return transcript, 0
    return dataclasses.replace(transcript, segments=tuple(segments)), removed
