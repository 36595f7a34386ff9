"""Long-form chunks: words heard across a cut land in exactly one chunk, tails say only what was
said, and the clean style — with the real tiny.en model on espeak-ng speech where it matters."""

from __future__ import annotations

import dataclasses
import itertools
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.asr.batch import transcribe_chunks_batched
from pipeline.asr.loading import load_model
from pipeline.asr.options import TranscribeOptions
from pipeline.asr.whisper import segments_from_whisper
from pipeline.audio.analysis import FRAME_HOP_S, sounding_center, sounding_frames, speech_end_s
from pipeline.audio.decode import decode_audio, read_chunk_samples, read_wav_pcm
from pipeline.core.errors import OptionsError
from pipeline.core.store import sha256_file
from pipeline.core.types import (
    SAMPLE_RATE,
    Chunk,
    ChunkTranscript,
    DecodedAudio,
    ModelInfo,
    Segment,
    Word,
    segment_from_dict,
    to_dict,
)
from pipeline.quality.score import normalize_words
from pipeline.quality.signals import NO_SPEECH, TAIL_GUESS, TakenOut, screen_chunk


def _chunk(index: int, start_s: float, end_s: float, before_s: float, after_s: float) -> Chunk:
    return Chunk(
        index=index,
        start_sample=round(start_s * SAMPLE_RATE),
        end_sample=round(end_s * SAMPLE_RATE),
        path=Path(f"chunk-{index}.wav"),
        sha256="x",
        cut="silence",
        context_before=round(before_s * SAMPLE_RATE),
        context_after=round(after_s * SAMPLE_RATE),
    )


def _raw(start: float, end: float, words: list[tuple[float, float, str]]) -> dict[str, Any]:
    """A whisper segment dict (times from the start of the chunk's WAV, context included)."""
    return {
        "start": start,
        "end": end,
        "text": "".join(w for _s, _e, w in words),
        "words": [{"start": s, "end": e, "word": w, "probability": 0.9} for s, e, w in words],
    }


def test_a_word_heard_across_a_cut_lands_in_one_chunk_only() -> None:
    # The cut at 20.0 s falls between "there" (19.4-19.9) and "again" (20.1-20.6); each chunk
    # holds 1 s of the other's audio and hears the whole phrase.
    first = _chunk(0, 0.0, 20.0, 0.0, 1.0)
    second = _chunk(1, 20.0, 40.0, 1.0, 1.0)
    phrase_first = [(18.5, 19.0, " Hello"), (19.4, 19.9, " there"), (20.1, 20.6, " again.")]
    phrase_second = [(0.4, 0.9, " there"), (1.1, 1.6, " again.")]  # its WAV starts at 19 s
    a = segments_from_whisper([_raw(18.5, 20.6, phrase_first)], first, context=True)
    b = segments_from_whisper(
        [_raw(0.4, 1.6, phrase_second), _raw(2.0, 3.0, [(2.0, 3.0, " Bye.")])],
        second,
        context=True,
    )
    assert [s.text for s in a] == ["Hello there"]
    assert [s.text for s in b] == ["again.", "Bye."]
    assert (a[0].start, a[0].end) == (18.5, 19.9)  # the kept words' times
    assert (b[0].start, b[0].end) == (20.1, 20.6)  # episode time: 20 s + (1.1 - 1.0 s)
    assert b[1].words == (Word(21.0, 22.0, " Bye.", 0.9),)
    assert all(first.start_s <= s.start <= s.end <= first.end_s for s in a)
    assert all(second.start_s <= s.start <= s.end <= second.end_s for s in b)


@pytest.mark.parametrize("sting_first", [False, True], ids=["sting-after", "sting-before"])
def test_a_loud_sting_in_the_context_does_not_silence_the_chunks_quiet_words(
    sting_first: bool,
) -> None:
    """A chunk's frames are judged against the chunk's own loudness, not its context's: 2 s of
    quiet sound (-45 dBFS) with a loud sting (-4 dBFS) in the 2 s of context beside it."""
    t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
    quiet = (0.008 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    sting = (0.9 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if sting_first:
        samples, chunk = np.concatenate([sting, quiet]), _chunk(0, 10.0, 12.0, 2.0, 0.0)
    else:
        samples, chunk = np.concatenate([quiet, sting]), _chunk(0, 10.0, 12.0, 0.0, 2.0)
    assert chunk.own_span == ((32000, 64000) if sting_first else (0, 32000))
    first = chunk.own_span[0] // 160  # frames well inside each part (a frame spans 64 ms)
    own = slice(first + 10, first + 180)
    sting_frames = slice(210 - first, 380 - first)
    judged_on_all = sounding_frames(samples)
    assert not judged_on_all[own].any()  # the sting sets the bar: the quiet part is "silent"
    judged_on_own = sounding_frames(samples, chunk.own_span)
    assert judged_on_own[own].all() and judged_on_own[sting_frames].all()
    word_s = chunk.context_before_s + 1.0  # a word heard in the middle of the quiet part
    assert sounding_center(judged_on_all, word_s - 0.2, word_s + 0.2) is None
    heard = sounding_center(judged_on_own, word_s - 0.2, word_s + 0.2)
    assert heard is not None and abs(heard - word_s) < 2 * FRAME_HOP_S


def test_a_word_stretched_over_the_pause_goes_where_it_is_heard() -> None:
    # "... taken care of" | "a lot": "of" is heard at 19.5-19.7 s, then a pause to 20.3 s with
    # the cut at 20.0 s in its middle. The first chunk times it 19.5-19.9, the second 19.5-20.4
    # (stretched over the pause): by the middles of those times both chunks would keep it.
    first = _chunk(0, 0.0, 20.0, 0.0, 1.0)
    second = _chunk(1, 20.0, 40.0, 1.0, 1.0)
    frames = int(40 / 0.01)
    sounding = np.zeros(frames, dtype=bool)
    sounding[int(19.5 / 0.01) : int(19.7 / 0.01)] = True  # "of"
    sounding[int(20.3 / 0.01) : int(21.0 / 0.01)] = True  # "a lot"
    local = {0: sounding[: int(21 / 0.01)], 1: sounding[int(19 / 0.01) :]}
    a = segments_from_whisper(
        [_raw(18.0, 19.9, [(18.0, 19.5, " taken care"), (19.5, 19.9, " of")])],
        first,
        context=True,
        sounding=local[0],
    )
    b = segments_from_whisper(
        [_raw(0.5, 2.0, [(0.5, 1.4, " of"), (1.4, 1.7, " a"), (1.7, 2.0, " lot")])],
        second,
        context=True,
        sounding=local[1],
    )
    assert [s.text for s in a] == ["taken care of"]
    assert [s.text for s in b] == ["a lot"]
    heard = sounding_center(local[1], 0.5, 1.4)  # the frames of "of" (+ 32 ms: frame centres)
    assert heard is not None and 0.5 <= heard <= 0.75
    assert sounding_center(local[1], 1.0, 1.2) is None  # all pause


def test_without_word_times_a_segment_goes_by_its_middle() -> None:
    chunk = _chunk(1, 20.0, 40.0, 1.0, 1.0)
    raw = [
        {"start": 0.0, "end": 0.8, "text": " before the cut"},  # 19.0-19.8: not ours
        {"start": 0.8, "end": 3.0, "text": " ours"},
        {"start": 20.6, "end": 21.5, "text": " after it"},  # 39.6-40.5: middle after 40 s
    ]
    assert [s.text for s in segments_from_whisper(raw, chunk, context=True)] == ["ours"]
    # Without context the times count from the chunk's own start, as before.
    plain = _chunk(1, 20.0, 40.0, 0.0, 0.0)
    got = segments_from_whisper(raw[:2], plain)
    assert [(s.start, s.end, s.words) for s in got] == [(20.0, 20.8, None), (20.8, 23.0, None)]


def test_words_round_trip_through_json() -> None:
    chunk = _chunk(0, 0.0, 20.0, 0.0, 1.0)
    (seg,) = segments_from_whisper([_raw(1.0, 2.0, [(1.0, 2.0, " Hi.")])], chunk, context=True)
    assert segment_from_dict(to_dict(seg)) == seg
    assert segment_from_dict(to_dict(seg) | {"words": None}).words is None


def test_style_is_validated_recorded_and_prompts_nothing() -> None:
    with pytest.raises(OptionsError, match="style"):
        TranscribeOptions(style="formal")
    assert TranscribeOptions().style == "clean"
    # The style is applied to the text after decoding: the decoder's prompt is the user's.
    assert TranscribeOptions(style="verbatim").prompt() is None
    assert TranscribeOptions(style="clean").prompt() is None
    clean = TranscribeOptions(style="clean", initial_prompt=" Podscribe, Prefect. ")
    assert clean.prompt() == "Podscribe, Prefect."
    assert TranscribeOptions(style="verbatim").to_dict()["style"] == "verbatim"  # recorded


# --------------------------------------------------------------------------------------------
# With real audio (tests/fixtures/longform.mp3: scripts/make_fixtures.py) and the real tiny.en


@pytest.fixture(scope="module")
def longform(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> DecodedAudio:
    """A long sentence, a short one 0.25 s later, then 0.5 s of near-silence (~14.5 s)."""
    root = tmp_path_factory.mktemp("longform")
    return decode_audio(fixtures_dir / "longform.mp3", root / "audio.wav")


def _cut(audio: DecodedAudio, cuts_s: list[float], context_s: float, out: Path) -> list[Chunk]:
    """Chunks of ``audio`` ending at ``cuts_s`` (and at its end), each WAV holding up to
    ``context_s`` of its neighbours' audio, as chunk_audio writes them."""
    bounds = [0, *(round(c * SAMPLE_RATE) for c in cuts_s), audio.num_samples]
    context_n = round(context_s * SAMPLE_RATE)
    chunks = []
    for i, (start, end) in enumerate(itertools.pairwise(bounds)):
        before, after = min(context_n, start), min(context_n, audio.num_samples - end)
        path = out / f"chunk-{i}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(SAMPLE_RATE)
            w.writeframes(read_wav_pcm(audio.path, start - before, end + after))
        chunks.append(
            Chunk(i, start, end, path, sha256_file(path), "silence", SAMPLE_RATE, before, after)
        )
    return chunks


def _words(results: list[ChunkTranscript]) -> list[str]:
    return normalize_words(" ".join(r.text for r in results))


@pytest.mark.slow
@pytest.mark.parametrize("cut_s", [3.5, 9.0, 12.5])
def test_a_cut_in_mid_sentence_costs_no_word(
    longform: DecodedAudio, tmp_path: Path, fixtures_dir: Path, cut_s: float
) -> None:
    # 3.5 s: "...and after | a long discussion" (no pause there); 9.0 s: "it decided to |
    # start building"; 12.5 s: "Thank you | all for coming". Cold chunks (no context) lost
    # "a" there ("after that. | long"), and wrote "Thank you all. | before coming".
    options = TranscribeOptions()
    loaded = load_model(options)
    whole = transcribe_chunks_batched(
        _cut(longform, [], 0.0, tmp_path / "whole"), options, loaded=loaded
    )
    chunks = _cut(longform, [cut_s], 1.0, tmp_path / "cut")
    cut = transcribe_chunks_batched(chunks, options, loaded=loaded)
    # No word doubled, lost or changed across the cut: the three words before it and the three
    # after it follow each other exactly as when the whole is transcribed in one window.
    # (Further from the cut a chunk may differ from the whole: another window, other context.)
    first, second = (normalize_words(r.text) for r in cut)
    across = " ".join(first[-3:] + second[:3])
    assert across in " ".join(_words(whole))
    reference = normalize_words((fixtures_dir / "longform.txt").read_text())
    assert across in " ".join(reference)
    for chunk, result in zip(chunks, cut, strict=True):
        words = [w for s in result.segments for w in s.words or ()]
        assert words and all(chunk.start_s <= (w.start + w.end) / 2 < chunk.end_s for w in words)
        assert all(chunk.start_s <= s.start <= s.end <= chunk.end_s for s in result.segments)


@pytest.mark.slow
def test_context_text_does_not_depend_on_the_batch(longform: DecodedAudio, tmp_path: Path) -> None:
    chunks = _cut(longform, [3.5, 9.0, 12.5], 1.0, tmp_path)
    options = TranscribeOptions()
    loaded = load_model(options)
    alone = transcribe_chunks_batched(chunks, options, batch_size=1, loaded=loaded)
    together = transcribe_chunks_batched(chunks, options, batch_size=8, loaded=loaded)
    # Text and times, of segments and words (log-probabilities differ in the last digits).
    assert _timed(alone) == _timed(together)
    assert all(s.words for r in together for s in r.segments)


def _timed(results: list[ChunkTranscript]) -> list[tuple[Any, ...]]:
    return [
        (s.text, s.start, s.end, [(w.text, w.start, w.end) for w in s.words or ()])
        for r in results
        for s in r.segments
    ]


@pytest.mark.slow
def test_a_quiet_tail_gets_no_words(longform: DecodedAudio, tmp_path: Path) -> None:
    # The last chunk ends on 0.8 s of (near-)silence after "tonight."; nothing follows it.
    (_, last) = _cut(longform, [12.5], 1.0, tmp_path)
    options = TranscribeOptions()
    (result,) = transcribe_chunks_batched([last], options, loaded=load_model(options))
    assert normalize_words(result.text) == ["all", "for", "coming", "tonight"]
    speech_end = 12.5 + speech_end_s(read_chunk_samples(last))
    assert all(s.start < speech_end for s in result.segments)
    screened, signals, _flags = screen_chunk(last, result)
    assert screened == result and signals.dropped_nonspeech == 0


def test_text_over_a_quiet_tail_is_taken_out(longform: DecodedAudio, tmp_path: Path) -> None:
    # What tiny.en wrote over the last half second of a chunk of a real call ("... in
    # marketing. Good evening."), placed over this fixture's near-silent tail.
    (chunk,) = _cut(longform, [], 0.0, tmp_path)
    end = chunk.end_s
    said = Segment(11.6, 13.6, "Thank you all for coming tonight.", 0)
    invented = Segment(end - 0.54, end, "Good evening.", 0)
    transcript = ChunkTranscript(
        0, chunk.sha256, 0.0, end, (said, invented), ModelInfo("tiny.en", "x", "test", Path("m")),
        {}, 0.0,
    )  # fmt: skip
    screened, signals, _flags = screen_chunk(chunk, transcript)
    assert screened.segments == (said,)
    assert signals.dropped_nonspeech == 1
    # What was taken out stays readable (quality.json, the report), with why.
    assert signals.taken_out == (TakenOut(invented.start, end, "Good evening.", NO_SPEECH),)


def _seg_of(start: float, end: float, text: str, probability: float) -> Segment:
    pieces = text.split()
    step = (end - start) / len(pieces)
    words = tuple(
        Word(start + i * step, start + (i + 1) * step, " " + w, probability)
        for i, w in enumerate(pieces)
    )
    return Segment(start, end, text, 0, words=words)


def test_a_guess_at_the_end_of_a_chunk_is_taken_out(longform: DecodedAudio, tmp_path: Path) -> None:
    # "Good evening." as tiny.en wrote it at the end of a chunk of a real call (word
    # probabilities 0.28 and 0.31, in 0.19 s), here over the last words this fixture says: the
    # sound analysis hears speech under it, so only the model's own doubt and the impossible
    # pace tell it is invented.
    (chunk, _) = _cut(longform, [12.5], 0.0, tmp_path)
    end = chunk.end_s
    speech_end = speech_end_s(read_chunk_samples(chunk))
    assert speech_end > end - 0.5  # the chunk ends in speech: screen_chunk hears it
    said = _seg_of(end - 3.0, end - 1.2, "The spring of next year.", 0.9)
    guess = _seg_of(end - 0.3, end - 0.1, "Good evening.", 0.3)
    sure = _seg_of(end - 0.3, end - 0.1, "Thank you.", 0.9)  # as fast, but believed
    slow = _seg_of(end - 0.7, end - 0.1, "You too.", 0.4)  # doubted, but said at 3.3 words/s
    early = _seg_of(end - 2.6, end - 2.5, "Ceremony.", 0.1)  # not in the tail: kept

    def screened(*segments: Segment) -> tuple[tuple[Segment, ...], int]:
        transcript = ChunkTranscript(
            0, chunk.sha256, 0.0, end, segments, ModelInfo("tiny.en", "x", "test", Path("m")),
            {"style": "verbatim"}, 0.0,
        )  # fmt: skip
        out, signals, _flags = screen_chunk(chunk, transcript)
        assert [(x.text, x.reason) for x in signals.taken_out] == [
            (seg.text, TAIL_GUESS) for seg in segments if seg not in out.segments
        ]
        return out.segments, signals.dropped_guesses

    assert screened(said, guess) == ((said,), 1)
    assert screened(said, sure) == ((said, sure), 0)
    assert screened(said, slow) == ((said, slow), 0)
    assert screened(early, said) == ((early, said), 0)
    # Without word probabilities nothing is called a guess.
    assert screened(said, dataclasses.replace(guess, words=None))[1] == 0
