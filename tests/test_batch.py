"""Batched decoding: whisper's timestamp rules exactly, batch-invariant text, remainders decoded,
and the micro-batcher under concurrent callers."""

from __future__ import annotations

import dataclasses
import threading
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_decodes
from whisper.decoding import ApplyTimestampRules, DecodingOptions, GreedyDecoder, SuppressTokens
from whisper.tokenizer import get_tokenizer

from pipeline.asr.batch import (
    BatchTranscriber,
    ChunkState,
    auto_batch_size,
    transcribe_chunks_batched,
)
from pipeline.asr.decode_task import (
    ContinueInWindow,
    DeviceSuppressTokens,
    VectorTimestampRules,
    decode_batch,
)
from pipeline.asr.loading import load_model
from pipeline.asr.microbatch import MicroBatcher
from pipeline.asr.options import TranscribeOptions
from pipeline.asr.static_decode import greedy_update, vocab_logits
from pipeline.asr.transcribe import transcribe_chunk, transcribe_chunks
from pipeline.audio.chunk import ChunkOptions, chunk_audio
from pipeline.audio.decode import decode_audio, read_chunk_samples, read_wav_samples
from pipeline.core.errors import OptionsError
from pipeline.core.store import sha256_file
from pipeline.core.types import SAMPLE_RATE, Chunk
from pipeline.quality.score import normalize_words

TOKENIZER = get_tokenizer(False)  # tiny.en's: English-only vocabulary
SAMPLE_BEGIN = len(TOKENIZER.sot_sequence)  # English-only: <|startoftranscript|> alone
VOCAB = 51864


def _random_sequences(rng: np.random.Generator, rows: int, length: int) -> torch.Tensor:
    """Token rows mixing text, EOT and timestamps, in the patterns the rules branch on."""
    tb = TOKENIZER.timestamp_begin
    kinds = rng.integers(0, 3, size=(rows, length))
    text = rng.integers(0, TOKENIZER.eot, size=(rows, length))
    stamps = tb + rng.integers(0, 1501, size=(rows, length))
    sampled = np.where(kinds == 0, text, np.where(kinds == 1, stamps, TOKENIZER.eot))
    prefix = np.tile(np.array(TOKENIZER.sot_sequence), (rows, 1))
    return torch.from_numpy(np.concatenate([prefix, sampled], axis=1)).long()


@pytest.mark.parametrize("max_initial", [None, 50])
@pytest.mark.parametrize("length", [0, 1, 2, 3, 7, 40])
def test_vectorised_timestamp_rules_match_whisper(length: int, max_initial: int | None) -> None:
    rng = np.random.default_rng(length * 7 + (max_initial or 0))
    for trial in range(20):
        tokens = _random_sequences(rng, rows=9, length=length)
        # Skewed logits so that both outcomes of the "timestamps likelier than text" rule occur.
        logits = torch.from_numpy(rng.normal(size=(9, VOCAB)).astype(np.float32))
        logits[: 4 + trial % 3, TOKENIZER.timestamp_begin :] += 6.0
        expected, got = logits.clone(), logits.clone()
        ApplyTimestampRules(TOKENIZER, SAMPLE_BEGIN, max_initial).apply(expected, tokens)
        VectorTimestampRules(TOKENIZER, SAMPLE_BEGIN, max_initial).apply(got, tokens)
        assert torch.equal(expected, got), f"trial {trial}"


def test_sync_free_greedy_update_matches_whisper() -> None:
    # Rows that already ended on EOT keep appending EOT and add nothing to their sum.
    rng = np.random.default_rng(3)
    eot = TOKENIZER.eot
    tokens = _random_sequences(rng, 6, 5)
    tokens[1, -1] = tokens[4, -1] = eot
    tokens[0, -1] = 100
    logits = torch.from_numpy(rng.normal(size=(6, VOCAB)).astype(np.float32))
    logits[2, eot] = 50.0  # row 2 ends now
    ours_sum, theirs_sum = torch.zeros(6), torch.zeros(6)
    ours, done = greedy_update(tokens, logits.clone(), ours_sum, eot)
    theirs, completed = GreedyDecoder(0.0, eot).update(tokens, logits.clone(), theirs_sum)
    assert torch.equal(ours, theirs)
    assert torch.equal(ours_sum, theirs_sum)
    assert ours_sum[1] == 0 and ours_sum[4] == 0 and ours_sum[0] < 0
    assert bool(done) is bool(completed) is False
    ended = torch.full((2, 4), eot)
    assert bool(greedy_update(ended, logits[:2].clone(), torch.zeros(2), eot)[1]) is True


def test_device_suppress_tokens_match_whisper() -> None:
    logits = torch.randn(3, VOCAB)
    suppress = [1, 5, 220, TOKENIZER.eot - 1]
    ours, theirs = logits.clone(), logits.clone()
    DeviceSuppressTokens(suppress).apply(ours, torch.zeros(3, 1, dtype=torch.long))
    SuppressTokens(suppress).apply(theirs, torch.zeros(3, 1, dtype=torch.long))
    assert torch.equal(ours, theirs)
    assert torch.isinf(ours[:, suppress]).all() and torch.isfinite(ours[:, 0]).all()


def test_continue_in_window_holds_back_eot_only_after_an_early_pair() -> None:
    tb, eot = TOKENIZER.timestamp_begin, TOKENIZER.eot
    sot = list(TOKENIZER.sot_sequence)
    rows = [
        [tb, 100, 200, tb + 300, tb + 310],  # a pair at index 310, sound goes on to 400: held
        [tb, 100, 200, tb + 300, tb + 410],  # a pair past the limit: EOT stays possible
        [tb, 100, 200, 300, tb + 310],  # text, then one timestamp: not a pair
        [tb, 100, 200, tb + 300, tb + 310],  # a pair, but this row has no sound left (0)
    ]
    tokens = torch.tensor([sot + r for r in rows])
    logits = torch.zeros(4, VOCAB)
    f = ContinueInWindow(SAMPLE_BEGIN, tb, eot, [400, 400, 400, 0])
    f.apply(logits, tokens)
    assert torch.isinf(logits[:, eot]).tolist() == [True, False, False, False]
    assert torch.isfinite(logits[:, :eot]).all() and torch.isfinite(logits[:, tb:]).all()
    # Rows 0 and 3 left (the others finished): the limits follow them.
    f.keep(torch.tensor([0, 3]))
    kept = torch.zeros(2, VOCAB)
    f.apply(kept, tokens[[0, 3]])
    assert torch.isinf(kept[:, eot]).tolist() == [True, False]
    # Too few sampled tokens for a pair: nothing to do.
    short = torch.zeros(1, VOCAB)
    ContinueInWindow(SAMPLE_BEGIN, tb, eot, [400]).apply(short, torch.tensor([sot + [tb]]))
    assert torch.isfinite(short).all()


@pytest.mark.parametrize("shape", [(1, 1, 384), (8, 1, 384), (5, 3, 384)])
def test_vocab_logits_match_whisper_projection(shape: tuple[int, int, int]) -> None:
    # The CPU layout (weight @ x.T) computes whisper's x @ weight.T: same shape, same values
    # up to float rounding, float32 out.
    gen = torch.Generator().manual_seed(sum(shape))
    weight = torch.randn(VOCAB, 384, generator=gen)
    x = torch.randn(*shape, generator=gen)
    ours = vocab_logits(x, weight)
    theirs = (x @ torch.transpose(weight, 0, 1)).float()
    assert ours.shape == theirs.shape == (*shape[:2], VOCAB)
    assert ours.dtype == torch.float32 and ours.is_contiguous()
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-4)
    assert torch.equal(ours.argmax(-1), theirs.argmax(-1))


def test_auto_batch_size_fits_memory() -> None:
    from whisper.model import ModelDimensions

    tiny = ModelDimensions(80, 1500, 384, 6, 4, 51864, 448, 384, 6, 4)
    assert auto_batch_size(80 * 2**30, tiny) == 64  # capped
    assert auto_batch_size(200 * 2**20, tiny) < 16
    assert auto_batch_size(0, tiny) == 1


def test_batch_size_is_validated() -> None:
    with pytest.raises(OptionsError, match="batch_size"):
        TranscribeOptions(batch_size=-1)
    with pytest.raises(OptionsError, match="batch_size"):
        TranscribeOptions(batch_size=10_000)


# --------------------------------------------------------------------------------------------
# With the real tiny.en model


def _write_chunk(samples: np.ndarray, path: Path, index: int = 0) -> Chunk:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return Chunk(index, 0, len(pcm), path, sha256_file(path), "end")


@pytest.fixture(scope="module")
def episode_chunks(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> list[Chunk]:
    """tests/fixtures/episode.mp3 cut into ~10 s chunks, plus speech.ogg as one more chunk."""
    root = tmp_path_factory.mktemp("episode")
    decoded = decode_audio(fixtures_dir / "episode.mp3", root / "audio.wav")
    options = ChunkOptions(max_chunk_s=10.0, min_chunk_s=3.0, search_s=5.0)
    chunks = list(chunk_audio(decoded, root / "chunks", "fixture", options).chunks)
    speech = decode_audio(fixtures_dir / "speech.ogg", root / "speech.wav")
    extra = _write_chunk(read_wav_samples(speech.path), root / "speech-chunk.wav", len(chunks))
    return [*chunks, extra]


def _texts(results: list) -> list[tuple[str, list[tuple[float, float]]]]:
    return [(r.text, [(s.start, s.end) for s in r.segments]) for r in results]


@pytest.mark.slow
@pytest.mark.parametrize("continue_in_window", [True, False])
def test_batched_text_does_not_depend_on_the_batch(
    episode_chunks: list[Chunk], continue_in_window: bool
) -> None:
    options = TranscribeOptions(continue_in_window=continue_in_window)
    loaded = load_model(options)
    alone = transcribe_chunks_batched(episode_chunks, options, batch_size=1, loaded=loaded)
    together = transcribe_chunks_batched(
        episode_chunks, options, batch_size=len(episode_chunks), loaded=loaded
    )
    assert _texts(alone) == _texts(together)
    assert [r.chunk_index for r in together] == [c.index for c in episode_chunks]
    words = normalize_words(" ".join(r.text for r in together))
    assert {"rivers", "mountains", "weather", "fox", "podcasts"} <= set(words)
    if not continue_in_window:
        # ... and the same segments as whisper.transcribe on each chunk (the path a batch of
        # one takes when windows are not continued).
        single_options = TranscribeOptions(batch_size=1, continue_in_window=False)
        single = [transcribe_chunk(c, single_options, loaded) for c in episode_chunks]
        assert _texts(single) == _texts(together)


@pytest.mark.slow
def test_real_decoding_matches_whisper_decode(episode_chunks: list[Chunk]) -> None:
    import whisper

    loaded = load_model(TranscribeOptions())
    mels = torch.stack(
        [
            whisper.pad_or_trim(whisper.log_mel_spectrogram(read_wav_samples(c.path)), 3000)
            for c in episode_chunks[:3]
        ]
    )
    options = DecodingOptions(language="en", fp16=False)
    theirs = whisper.decode(loaded.model, mels, options)
    # The dynamic loop (CPU default) and the static-cache loop (the GPU's, eager here).
    for static in (False, True):
        assert_same_decodes(decode_batch(loaded.model, mels, options, static=static), theirs)
    assert all(len(r.tokens) > 5 for r in theirs)


@pytest.mark.slow
def test_beam_search_decodes_a_batch_as_each_window_alone(episode_chunks: list[Chunk]) -> None:
    # whisper.decode's beams work for one window at a time (its features are not repeated
    # per beam, and its beam decoder keeps the cache of another inference): a batch of
    # windows must give each window's own beam result.
    import whisper

    loaded = load_model(TranscribeOptions())
    mels = torch.stack(
        [
            whisper.pad_or_trim(whisper.log_mel_spectrogram(read_wav_samples(c.path)), 3000)
            for c in episode_chunks[:3]
        ]
    )
    options = DecodingOptions(language="en", fp16=False, beam_size=5)
    alone = [whisper.decode(loaded.model, mel, options) for mel in mels]
    together = decode_batch(loaded.model, mels, options)
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
    assert all(len(r.tokens) > 5 for r in alone)


@pytest.mark.slow
def test_beam_search_takes_the_batched_decoder_and_is_batch_invariant(
    episode_chunks: list[Chunk],
) -> None:
    # --beam-size goes through the batched decoder (continue_in_window, the chunk's speech end,
    # the fallback ladder per window), not whisper.transcribe per chunk; and a chunk's beam
    # text is the same alone as in a batch of all the chunks.
    options = TranscribeOptions(beam_size=5, batch_size=len(episode_chunks))
    loaded = load_model(options)
    alone = transcribe_chunks_batched(episode_chunks, options, batch_size=1, loaded=loaded)
    together = transcribe_chunks(episode_chunks, options, loaded=loaded)
    assert _texts(alone) == _texts(together)
    assert {r.options["engine"] for r in together} == {"batched"}
    assert {r.options["beam_size"] for r in together} == {5}
    words = normalize_words(" ".join(r.text for r in together))
    assert {"rivers", "mountains", "weather", "fox", "podcasts"} <= set(words)
    # One chunk on its own (what the repair pass runs): the same engine, the same text.
    single = transcribe_chunk(episode_chunks[0], options, loaded)
    assert single.options["engine"] == "batched"
    assert _texts([single]) == _texts(alone[:1])
    # whisper.transcribe is left for what batches cannot do, or for transcribe()'s seek alone.
    plain = TranscribeOptions(beam_size=5, batch_size=1, continue_in_window=False)
    assert transcribe_chunk(episode_chunks[0], plain, loaded).options["engine"] == (
        "whisper.transcribe"
    )


def _gap_chunk(tmp_path: Path, fixtures_dir: Path) -> Chunk:
    """Speech, 8 s of silence, speech again (fixture seconds 10-20 and 20-30)."""
    episode = read_wav_samples(decode_audio(fixtures_dir / "episode.mp3", tmp_path / "e.wav").path)
    first, second = episode[10 * SAMPLE_RATE : 20 * SAMPLE_RATE], episode[20 * SAMPLE_RATE :]
    silence = np.zeros(8 * SAMPLE_RATE, dtype=np.float32)
    audio = np.concatenate([first, silence, second[: 10 * SAMPLE_RATE]])
    return _write_chunk(audio, tmp_path / "gap.wav")


@pytest.mark.slow
def test_speech_after_an_early_timestamp_is_decoded(tmp_path: Path, fixtures_dir: Path) -> None:
    # Speech, 8 s of silence, speech again (fixture seconds 10-20 and 20-30): tiny.en closes the
    # first window on a "continue from here" timestamp before the second part ends. The rest
    # of the chunk must then be decoded from that timestamp, not dropped.
    chunk = _gap_chunk(tmp_path, fixtures_dir)
    options = TranscribeOptions(continue_in_window=False)  # transcribe()'s seek
    loaded = load_model(options)

    engine = BatchTranscriber(options, loaded)
    state = engine.start(chunk)
    engine.run_batch([state])  # one window: what single-pass batch decoding would keep
    assert not state.done, "the first window was expected to stop early"
    first_pass = set(normalize_words(" ".join(s["text"] for s in state.segments)))

    [result] = transcribe_chunks_batched([chunk], options, batch_size=4, loaded=loaded)
    words = set(normalize_words(result.text))
    assert {"rivers", "years", "surprised", "stream", "storm", "worry"} <= words
    recovered = {"plan", "map"} & words
    assert recovered and not recovered & first_pass  # spoken after the early stop
    assert max(s.end for s in result.segments) > 26.0  # decoded up to the chunk's end


@pytest.mark.slow
def test_a_window_goes_on_while_the_chunk_has_speech_after_its_early_stop(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    # The chunk of the test above. Without continuing, the first window ends on a pair and the
    # rest needs a second window; with it (the default) one window decodes it all.
    chunk = _gap_chunk(tmp_path, fixtures_dir)
    loaded = load_model(TranscribeOptions())

    windows = {}
    for cont in (False, True):
        engine = BatchTranscriber(TranscribeOptions(continue_in_window=cont), loaded)
        state = engine.start(chunk)
        while not state.done:
            engine.run_batch([state])
        windows[cont] = state.windows
        if cont:
            words = set(normalize_words(" ".join(s["text"] for s in state.segments)))
            assert {"rivers", "storm", "worry", "plan", "map"} <= words
            assert max(s["end"] for s in state.segments) > 26.0
    assert windows == {False: 2, True: 1}
    # With beams too: one window, up to the chunk's end.
    engine = BatchTranscriber(TranscribeOptions(beam_size=5), loaded)
    state = engine.start(chunk)
    engine.run_batch([state])
    assert state.done and state.windows == 1
    words = set(normalize_words(" ".join(s["text"] for s in state.segments)))
    assert {"rivers", "storm", "worry", "plan", "map"} <= words
    # The static-cache loop (the GPU's, eager here) holds EOT back the same way.
    engine = BatchTranscriber(TranscribeOptions(), loaded)
    state = engine.start(chunk)
    mel = state.window_mel()[None]
    options = DecodingOptions(language="en", fp16=False)
    limits = engine.continue_before([state])
    assert limits and limits[0] > 0
    dynamic, static = (
        decode_batch(loaded.model, mel, options, static=s, continue_before=limits)[0].tokens
        for s in (False, True)
    )
    assert dynamic == static
    plain = decode_batch(loaded.model, mel, options)[0].tokens
    assert len(dynamic) > len(plain)  # went on past the early stop


@pytest.mark.slow
def test_speech_after_a_window_whisper_ended_itself_is_decoded(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    # On conversation-dev tiny.en ended a window after a short reply with its last timestamp
    # stretched to the window's end ("Bye.<|15.00|><|20.00|>" then EOT) while a new call began
    # after it: taken at its word, the window was done and "Hello, this is ..." was lost. Here:
    # what tiny.en writes for the first 10 s alone, its end timestamp stretched the same way,
    # as the first window of a chunk whose speech goes on 6 s later.
    episode = read_wav_samples(decode_audio(fixtures_dir / "episode.mp3", tmp_path / "e.wav").path)
    first, second = episode[10 * SAMPLE_RATE : 20 * SAMPLE_RATE], episode[20 * SAMPLE_RATE :]
    gap = np.zeros(6 * SAMPLE_RATE, dtype=np.float32)
    chunk = _write_chunk(
        np.concatenate([first, gap, second[: 8 * SAMPLE_RATE]]), tmp_path / "r.wav"
    )
    loaded = load_model(TranscribeOptions())
    alone = BatchTranscriber(TranscribeOptions(), loaded).start(
        _write_chunk(first, tmp_path / "first.wav")
    )
    decoded = decode_batch(loaded.model, alone.window_mel()[None], DecodingOptions(language="en"))[
        0
    ]
    tb = TOKENIZER.timestamp_begin
    tokens = list(decoded.tokens)
    while tokens and tokens[-1] >= tb:  # end on text, then one stretched end timestamp
        tokens.pop()
    stretched = dataclasses.replace(decoded, tokens=[*tokens, tb + int(20.0 / 0.02)])

    seeks = {}
    for cont in (True, False):
        engine = BatchTranscriber(TranscribeOptions(continue_in_window=cont), loaded)
        state = engine.start(chunk)
        assert state.speech_end_s > 23.0 or not cont
        engine._advance(state, stretched)  # no encoder output given: a fallback decode's path
        # Its words are timed on this window's audio (once on the next window's: all at 16-18 s),
        # inside the first 10 s although the segment's end timestamp says 20 s.
        timed = [w for s in state.segments for w in s["words"]]
        assert timed[0]["start"] < 1.0 and 9.0 < timed[-1]["end"] < 11.5
        seeks[cont] = (state.seek, timed[-1]["end"])
        while not state.done:
            engine.run_batch([state])
        words = set(normalize_words(" ".join(s["text"] for s in state.segments)))
        assert {"rivers", "surprised", "stream"} <= words
        assert ({"storm", "worry"} <= words) == cont  # spoken after the stretched end: kept
    assert seeks[False][0] == state.content_frames  # as transcribe(): the window counted as done
    # the rest resumes at the last word's end (100 frames a second)
    seek, last_word_end = seeks[True]
    assert seek == round(last_word_end * 100)


@pytest.mark.slow
def test_no_window_goes_on_into_music(tmp_path: Path, fixtures_dir: Path, run_ffmpeg) -> None:
    # Music, speech, music: tiny.en ends the window on a pair before the closing music. That
    # music is sound but not speech, so the window must not be made to go on into it (it was
    # while any sound counted: "The ... the" written over the chord).
    chord_src = (
        "aevalsrc='0.15*(0.6+0.4*sin(2*PI*4*t))*(sin(2*PI*220*t)+sin(2*PI*277.18*t)"
        "+sin(2*PI*329.63*t))':s=16000:d=12"
    )
    chord = read_wav_samples(
        decode_audio(
            run_ffmpeg("-f", "lavfi", "-i", chord_src, tmp_path / "chord.flac"),
            tmp_path / "chord.wav",
        ).path
    )
    speech = read_wav_samples(decode_audio(fixtures_dir / "speech.ogg", tmp_path / "s.wav").path)
    chunk = _write_chunk(
        np.concatenate([chord[: 5 * SAMPLE_RATE], speech, chord]), tmp_path / "music.wav"
    )
    loaded = load_model(TranscribeOptions())
    results = {
        cont: transcribe_chunks_batched(
            [chunk], TranscribeOptions(continue_in_window=cont), loaded=loaded
        )[0]
        for cont in (False, True)
    }
    assert {"fox", "podcasts"} <= set(normalize_words(results[True].text))
    assert _texts([results[True]]) == _texts([results[False]])
    speech_end = 5.0 + len(speech) / SAMPLE_RATE
    assert max(s.start for s in results[True].segments) <= speech_end + 1.0  # none over music


@pytest.mark.slow
def test_micro_batcher_serves_concurrent_callers(episode_chunks: list[Chunk]) -> None:
    options = TranscribeOptions(batch_size=4)
    expected = _texts(transcribe_chunks_batched(episode_chunks, options))
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def worker(chunks: list[Chunk], batcher: MicroBatcher) -> None:
        try:
            futures = [(c.index, batcher.submit(c, options)) for c in chunks]
            for index, future in futures:
                results[index] = future.result(timeout=600)
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)

    with MicroBatcher(max_wait_s=0.2) as batcher:
        threads = [
            threading.Thread(target=worker, args=(episode_chunks[i::3], batcher)) for i in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors
    got = [results[c.index] for c in episode_chunks]
    assert _texts(got) == expected
    with pytest.raises(Exception, match="closed"):
        batcher.submit(episode_chunks[0], options)


@pytest.mark.slow
def test_micro_batcher_reports_a_bad_chunk_to_its_caller_only(
    episode_chunks: list[Chunk], tmp_path: Path
) -> None:
    missing = Chunk(99, 0, 16000, tmp_path / "missing.wav", "0" * 64, "end")
    options = TranscribeOptions(batch_size=4)
    with MicroBatcher() as batcher:
        bad = batcher.submit(missing, options)
        good = batcher.submit(episode_chunks[-1], options)
        with pytest.raises(Exception, match="chunk 100"):
            bad.result(timeout=600)
        assert "fox" in good.result(timeout=600).text.lower()


@pytest.mark.slow
def test_micro_batcher_waits_for_announced_chunks_only(episode_chunks: list[Chunk]) -> None:
    import time

    options = TranscribeOptions(batch_size=4)
    chunks = episode_chunks[:3]
    with MicroBatcher(max_wait_s=0.0) as batcher:
        # Unannounced: the first chunk is decoded alone, the late ones after it.
        first = batcher.submit(chunks[0], options)
        time.sleep(0.3)
        late = [batcher.submit(c, options) for c in chunks[1:]]
        unannounced = [f.result(timeout=600) for f in [first, *late]]
        assert batcher.batch_sizes[0] == 1 and batcher.encoded_ahead == 0

        # Announced: the batch waits for the late ones, encoding what has come meanwhile;
        # the text is the same as without the wait.
        batcher.batch_sizes.clear()
        batcher.expect(3, within_s=30.0)
        first = batcher.submit(chunks[0], options)
        time.sleep(0.3)
        late = [batcher.submit(c, options) for c in chunks[1:]]
        announced = [f.result(timeout=600) for f in [first, *late]]
        assert batcher.batch_sizes[0] == 3 and batcher.announced() == 0
        assert batcher.encoded_ahead >= 1
        assert _texts(announced) == _texts(unannounced)

        # Withdrawn or expired announcements stop the wait.
        batcher.batch_sizes.clear()
        batcher.expect(2, within_s=60.0)
        started = time.perf_counter()
        future = batcher.submit(chunks[0], options)
        time.sleep(0.3)
        batcher.withdraw(1)
        future.result(timeout=600)
        batcher.expect(5, within_s=0.5)
        batcher.submit(chunks[1], options).result(timeout=600)
        assert time.perf_counter() - started < 30.0
        assert list(batcher.batch_sizes)[:2] == [1, 1] and batcher.announced() == 0


@pytest.mark.slow
def test_chunks_queued_ahead_are_claimed_by_their_callers(episode_chunks: list[Chunk]) -> None:
    options = TranscribeOptions(batch_size=2)
    chunks = episode_chunks[:3]
    with MicroBatcher(max_wait_s=0.0) as batcher:
        alone = [batcher.submit(c, options).result(timeout=600) for c in chunks]
        batcher.batch_sizes.clear()
        # One batch is taken ahead; the third chunk is left to its caller.
        assert batcher.batch_size(options) == 2
        batcher.submit_ahead(chunks[:2], options)
        first = batcher.submit(chunks[0], options)  # claims the future made ahead
        assert batcher.claimed_ahead == 1
        third = batcher.submit(chunks[2], options)  # queued now: was not taken ahead
        assert _texts([first.result(timeout=600), third.result(timeout=600)]) == _texts(
            [alone[0], alone[2]]
        )
        assert batcher.batch_sizes[0] == 2  # the two taken ahead, decoded together
        # Nobody claims the second: dropped once, and a later submit queues it afresh.
        assert batcher.drop_ahead(chunks, options) == 1
        assert batcher.drop_ahead(chunks, options) == 0
        again = batcher.submit(chunks[1], options)
        assert batcher.claimed_ahead == 1
        assert _texts([again.result(timeout=600)]) == _texts([alone[1]])
        # A caller that fails before submitting abandons its chunk: queued ahead, it is
        # dropped; otherwise one announcement is taken back.
        batcher.submit_ahead(chunks[:1], options)
        batcher.abandon(chunks[0], options)
        assert batcher.drop_ahead(chunks, options) == 0
        batcher.expect(1, within_s=60.0)
        batcher.abandon(chunks[0], options)
        assert batcher.announced() == 0
    # Chunks handed over ahead are a group: the worker does not wait max_wait_s for more.
    with MicroBatcher(max_wait_s=3600.0) as batcher:
        batcher.submit_ahead(chunks[:2], TranscribeOptions(batch_size=4))
        claimed = [batcher.submit(c, TranscribeOptions(batch_size=4)) for c in chunks[:2]]
        assert _texts([f.result(timeout=600) for f in claimed]) == _texts(alone[:2])
        assert list(batcher.batch_sizes) == [2]
    # A whole batch handed over ahead while more chunks are announced: the worker takes the
    # group at once (encoding ahead is for a wait on a batch not yet full; it would only delay
    # this one's start).
    with MicroBatcher(max_wait_s=3600.0) as batcher:
        batcher.expect(1, within_s=60.0)
        batcher.submit_ahead(chunks[:2], options)
        claimed = [batcher.submit(c, options) for c in chunks[:2]]
        assert _texts([f.result(timeout=600) for f in claimed]) == _texts(alone[:2])
        assert list(batcher.batch_sizes) == [2] and batcher.encoded_ahead == 0
        batcher.withdraw(1)


@pytest.mark.slow
def test_fallback_windows_are_seeded_alone(episode_chunks: list[Chunk]) -> None:
    # A logprob threshold no decode can meet sends every window down the sampled ladder.
    options = TranscribeOptions(logprob_threshold=0.0, temperatures=(0.0, 0.6))
    loaded = load_model(options)
    chunks = episode_chunks[:3]
    alone = transcribe_chunks_batched(chunks, options, batch_size=1, loaded=loaded)
    together = transcribe_chunks_batched(chunks, options, batch_size=3, loaded=loaded)
    assert _texts(alone) == _texts(together)
    assert {s.temperature for r in together for s in r.segments} == {0.6}


@pytest.mark.slow
def test_a_silent_chunk_is_skipped_though_sound_follows_it(tmp_path: Path) -> None:
    # A long episode's chunk WAV also holds the 30 s after the chunk (long_after_s). Whether
    # the chunk is silent is judged on its own samples: 55 s of digital silence just before
    # a tone still gets an empty transcript without Whisper.
    t = np.arange(40 * SAMPLE_RATE) / SAMPLE_RATE
    samples = np.concatenate([np.zeros(60 * SAMPLE_RATE), 0.3 * np.sin(2 * np.pi * 440 * t)])
    decoded = decode_audio(_write_chunk(samples, tmp_path / "in.wav").path, tmp_path / "a.wav")
    options = ChunkOptions(long_chunk_s=60.0, min_chunks=1)
    first = chunk_audio(decoded, tmp_path / "ep", "ep", options).chunks[0]
    assert first.end_s <= 60.0 and first.context_after > 0
    assert np.abs(read_chunk_samples(first, context=True)).max() > 0.1  # it hears the tone
    (result,) = transcribe_chunks(
        [first], TranscribeOptions(), loaded=load_model(TranscribeOptions())
    )
    assert result.segments == () and result.options["skipped"].startswith("silent")


@pytest.mark.slow
def test_a_long_episodes_chunk_is_decoded_window_after_window(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    # A long episode's chunks hold several Whisper windows (ChunkOptions.long_chunk_s): each
    # window starts where Whisper ended the one before, as transcribe() does. Here the fixture
    # episode twice (97 s) in chunks of up to 60 s: the first chunk takes two windows or more,
    # and what it writes is what was said, no word lost or doubled where a window ends. Its
    # last window also hears the 30 s after the chunk (long_after_s), whose words it decodes
    # and drops: none is doubled across the cut.
    from pipeline.quality.score import score_texts

    episode = read_wav_samples(decode_audio(fixtures_dir / "episode.mp3", tmp_path / "e.wav").path)
    twice = np.concatenate([episode, episode])
    decoded = decode_audio(_write_chunk(twice, tmp_path / "twice.wav").path, tmp_path / "a.wav")
    said = " ".join([(fixtures_dir / "episode.txt").read_text()] * 2)
    loaded = load_model(TranscribeOptions())
    engine = BatchTranscriber(TranscribeOptions(), loaded)

    def transcribe(options: ChunkOptions, name: str) -> tuple[list[Chunk], list[ChunkState]]:
        chunks = list(chunk_audio(decoded, tmp_path / name, "ep", options).chunks)
        states = [engine.start(c) for c in chunks]
        for state in states:
            while not state.done:
                engine.run_batch([state])
        return chunks, states

    def text_of(states: list[ChunkState]) -> str:
        return " ".join(seg.text for st in states for seg in engine.finish(st).segments)

    chunks, states = transcribe(ChunkOptions(long_chunk_s=60.0, min_chunks=1), "long")
    assert chunks[0].duration_s > 45.0 and states[0].windows >= 2
    assert chunks[0].context_after > 0 and states[0].core_end_frames is not None
    words = [w for s in states[0].segments for w in s.get("words", [])]
    starts = [w["start"] for w in words]
    assert starts == sorted(starts)  # the next window's words follow the last one's
    # The last window heard past the cut; the words the chunk keeps start before it.
    assert starts[-1] > chunks[0].duration_s
    kept = [w for seg in engine.finish(states[0]).segments for w in seg.words or ()]
    assert kept and max(w.start for w in kept) < chunks[0].end_s
    # Words timed only to keep the chunk's own are not written when not asked for.
    plain = BatchTranscriber(TranscribeOptions(word_timestamps=False), loaded)
    state = plain.start(chunks[0])
    while not state.done:
        plain.run_batch([state])
    segments = plain.finish(state).segments
    assert [s.words for s in segments] == [None] * len(segments)
    assert " ".join(s.text for s in segments) == " ".join(
        s.text for s in engine.finish(states[0]).segments
    )
    text = text_of(states)
    _, short = transcribe(ChunkOptions(long_chunk_s=30.0), "short")
    short_text = text_of(short)
    long_wer, short_wer = score_texts(text, said).wer, score_texts(short_text, said).wer
    assert long_wer <= 0.08 and long_wer <= short_wer + 0.02, (long_wer, short_wer, text)
