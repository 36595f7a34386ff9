"""Measure merging chunks decoded with audio context: by word times, or by aligning the overlap.

Decodes an episode's chunks with ``context_s`` of neighbouring audio on each side (the batched
engine, default options), keeps every word Whisper times, including those heard in the context,
then merges the chunks two ways and scores each against the reference:

- ``time``: each chunk keeps the words whose middle lies inside it (as ``context_s`` does now);
- ``align``: at each cut T, chunk i's words timed after T - context - 0.5 s and chunk i+1's
  words timed before T + context + 0.5 s are aligned on normalised text (difflib); the matched
  pair nearest T is the splice (chunk i up to it, chunk i+1 from it), so a word both chunks
  heard is written once; without a match, the time rule.

    python scripts/overlap_merge.py EPISODE REFERENCE --context-s 2 --work /tmp/overlap

No repair, no screening: compare the rows with each other (and with ``--context-s 0``), not
with a full pipeline run. BENCHMARKS log, "Issue 13, second pass".
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import time
from pathlib import Path

from pipeline.asr import batch
from pipeline.asr.options import TranscribeOptions
from pipeline.audio.chunk import ChunkOptions
from pipeline.core.types import Chunk
from pipeline.episode import prepare_episode
from pipeline.quality.score import score_texts

TimedWord = tuple[float, float, str]  # episode seconds, text as Whisper wrote it


def decode_words(chunks: list[Chunk]) -> dict[int, list[TimedWord]]:
    """Every timed word of each chunk (context included), in episode seconds."""
    raw: dict[int, list[dict]] = {}
    finish = batch.BatchTranscriber.finish

    def keep_raw(self: batch.BatchTranscriber, state: batch.ChunkState):  # type: ignore[no-untyped-def]
        raw[state.chunk.index] = [dict(s) for s in state.segments]
        return finish(self, state)

    batch.BatchTranscriber.finish = keep_raw  # type: ignore[method-assign]
    try:
        batch.transcribe_chunks_batched(chunks, TranscribeOptions())
    finally:
        batch.BatchTranscriber.finish = finish  # type: ignore[method-assign]
    out = {}
    for chunk in chunks:
        offset = chunk.start_s - chunk.context_before_s
        out[chunk.index] = [
            (offset + w["start"], offset + w["end"], w["word"])
            for seg in raw.get(chunk.index, [])
            if seg["text"].strip()
            # untimed (no context): the segment as one piece
            for w in seg.get("words") or [{**seg, "word": " " + seg["text"].strip()}]
        ]
    return out


def _mid(w: TimedWord) -> float:
    return (w[0] + w[1]) / 2


def _norm(text: str) -> str:
    return re.sub(r"[^\w]", "", text.lower())


def merge(chunks: list[Chunk], words: dict[int, list[TimedWord]], reach_s: float | None) -> str:
    """The episode text: words by the time rule, and (``reach_s``) spliced at aligned cuts."""
    lists = [words[c.index] for c in chunks]
    spans = []
    for chunk, ws in zip(chunks, lists, strict=True):
        inside = [k for k, w in enumerate(ws) if chunk.start_s <= _mid(w) < chunk.end_s]
        spans.append([inside[0], inside[-1] + 1] if inside else [0, 0])
    for i in range(len(chunks) - 1 if reach_s is not None else 0):
        cut = chunks[i].end_s
        a = [k for k, w in enumerate(lists[i]) if _mid(w) >= cut - reach_s]  # type: ignore[operator]
        b = [k for k, w in enumerate(lists[i + 1]) if _mid(w) <= cut + reach_s]  # type: ignore[operator]
        ta = [_norm(lists[i][k][2]) for k in a]
        tb = [_norm(lists[i + 1][k][2]) for k in b]
        matcher = difflib.SequenceMatcher(None, ta, tb, autojunk=False)
        pairs = [
            (abs((_mid(lists[i][a[m.a + j]]) + _mid(lists[i + 1][b[m.b + j]])) / 2 - cut), m, j)
            for m in matcher.get_matching_blocks()
            for j in range(m.size)
            if ta[m.a + j]
        ]
        if pairs:
            _, m, j = min(pairs, key=lambda p: p[0])
            spans[i][1], spans[i + 1][0] = a[m.a + j], b[m.b + j]
    return "".join(w[2] for ws, (lo, hi) in zip(lists, spans, strict=True) for w in ws[lo:hi])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("episode", help="audio file")
    parser.add_argument("reference", type=Path, help="reference text")
    parser.add_argument("--context-s", type=float, default=2.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/overlap-merge"))
    args = parser.parse_args()
    manifest = prepare_episode(
        args.episode,
        audio_root=args.work / f"audio-c{args.context_s:g}",
        chunk_options=ChunkOptions(context_s=args.context_s),
    )
    chunks = list(manifest.chunks)
    started = time.perf_counter()
    words = decode_words(chunks)
    decode_s = time.perf_counter() - started
    reference = args.reference.read_text(encoding="utf-8")
    rows = {"time": merge(chunks, words, None)}
    if args.context_s > 0:
        rows["align"] = merge(chunks, words, args.context_s + 0.5)
    for name, text in rows.items():
        s = score_texts(text, reference)
        c = s.counts
        print(
            json.dumps(
                {
                    "merge": name,
                    "context_s": args.context_s,
                    "chunks": len(chunks),
                    "decode_s": round(decode_s, 1),
                    "wer": round(s.wer, 4),
                    "S/D/I": f"{c.substitutions}/{c.deletions}/{c.insertions}",
                }
            )
        )


if __name__ == "__main__":
    main()
