"""Chunks conditioned on the previous chunk's text (``condition_chunks``): which chunk follows
which, what text is handed on, prompts of different lengths in one batch, batch invariance."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from conftest import assert_same_decodes

from pipeline.asr.batch import (
    BatchTranscriber,
    condition_rounds,
    transcribe_chunks_batched,
)
from pipeline.asr.cache import chunk_result_key, conditioned_on
from pipeline.asr.decode_task import decode_batch
from pipeline.asr.loading import load_model
from pipeline.asr.options import LoadedModel, TranscribeOptions, context_text
from pipeline.audio.chunk import ChunkOptions, chunk_audio
from pipeline.audio.decode import decode_audio, read_wav_samples
from pipeline.core.errors import OptionsError
from pipeline.core.types import Chunk, ModelInfo, Segment
from pipeline.quality.repair import RepairPolicy
from pipeline.quality.signals import ChunkFlags


def _seg(text: str, temperature: float = 0.0) -> Segment:
    return Segment(0.0, 1.0, text, 0, temperature=temperature)


@pytest.mark.parametrize(
    ("segments", "expected"),
    [
        ([], ""),
        ([_seg(" Hello there."), _seg(" How are you?")], "Hello there. How are you?"),
        ([_seg(" "), _seg(" One.")], "One."),
        # A hot (failed, sampled) segment: nothing up to it is handed on, as transcribe().
        ([_seg(" Kept?"), _seg(" Garbled", 0.6), _seg(" After.")], "After."),
        ([_seg(" Before."), _seg(" Garbled", 0.8)], ""),
        ([_seg(" Warm enough.", 0.4)], "Warm enough."),
    ],
)
def test_context_text(segments: list[Segment], expected: str) -> None:
    assert context_text(segments) == expected


def _chunk(index: int) -> Chunk:
    return Chunk(index, index * 10, index * 10 + 10, Path(f"c{index}.wav"), "0" * 64, "silence")


def test_chunks_are_decoded_in_rounds_of_their_runs() -> None:
    chunks = [_chunk(i) for i in range(7)]
    # Runs of 3: 0-1-2, 3-4-5, 6; round t holds chunk t of every run.
    rounds = condition_rounds(chunks, TranscribeOptions(condition_chunks=3))
    assert rounds == [[(0, -1), (3, -1), (6, -1)], [(1, 0), (4, 3)], [(2, 1), (5, 4)]]
    assert condition_rounds(chunks, TranscribeOptions()) == [[(i, -1) for i in range(7)]]
    # A gap in the indices (a silent chunk, or chunks of another episode) starts a new run.
    gapped = [_chunk(0), _chunk(1), _chunk(3), _chunk(4)]
    assert condition_rounds(gapped, TranscribeOptions(condition_chunks=8)) == [
        [(0, -1), (2, -1)],
        [(1, 0), (3, 2)],
    ]


def test_a_stored_conditioned_chunk_is_keyed_by_the_audio_before_it_in_its_run() -> None:
    # A conditioned chunk's text depends on its predecessors' (each is the next one's prompt):
    # a changed cut before it, with this chunk's own audio the same, must not reuse its result.
    options = TranscribeOptions(condition_chunks=3)
    loaded = LoadedModel(
        model=None, info=ModelInfo("tiny.en", "w" * 64, "test", Path("m")), device="cpu"
    )
    chunks = [_chunk(i) for i in range(5)]
    assert conditioned_on(chunks, chunks[2], options) == (chunks[0], chunks[1])
    assert conditioned_on(chunks, chunks[3], options) == ()  # a run starts cold
    assert conditioned_on(chunks, chunks[4], options) == (chunks[3],)
    assert conditioned_on(chunks, chunks[2], TranscribeOptions()) == ()

    def key(cut: list[Chunk], i: int, opts: TranscribeOptions = options) -> str:
        return chunk_result_key(cut[i], opts, loaded, conditioned_on(cut, cut[i], opts))

    recut = [dataclasses.replace(chunks[0], sha256="other"), *chunks[1:]]
    assert key(recut, 2) != key(chunks, 2) and key(recut, 4) == key(chunks, 4)
    cold = TranscribeOptions()  # no conditioning: only the chunk's own audio counts
    assert key(recut, 2, cold) == key(chunks, 2, cold)


def test_condition_chunks_is_validated() -> None:
    with pytest.raises(OptionsError, match="condition_chunks must be between 0"):
        TranscribeOptions(condition_chunks=-1)
    with pytest.raises(OptionsError, match="condition_chunks needs the batched greedy decoder"):
        TranscribeOptions(condition_chunks=8, beam_size=5)
    assert TranscribeOptions(condition_chunks=8).to_dict()["condition_chunks"] == 8


@pytest.fixture(scope="module")
def chunks(tmp_path_factory: pytest.TempPathFactory, fixtures_dir: Path) -> list[Chunk]:
    """tests/fixtures/episode.mp3 cut into ~10 s chunks."""
    root = tmp_path_factory.mktemp("episode")
    decoded = decode_audio(fixtures_dir / "episode.mp3", root / "audio.wav")
    options = ChunkOptions(max_chunk_s=10.0, min_chunk_s=3.0, search_s=5.0)
    return list(chunk_audio(decoded, root / "chunks", "fixture", options).chunks)


def _texts(results: list) -> list[tuple[str, list[tuple[float, float]]]]:
    return [(r.text, [(s.start, s.end) for s in r.segments]) for r in results]


@pytest.mark.slow
def test_windows_with_prompts_of_different_lengths_decode_as_whisper_alone(
    chunks: list[Chunk],
) -> None:
    import whisper
    from whisper.decoding import DecodingOptions

    loaded = load_model(TranscribeOptions())
    tokenizer = whisper.tokenizer.get_tokenizer(False)
    mels = torch.stack(
        [
            whisper.pad_or_trim(whisper.log_mel_spectrogram(read_wav_samples(c.path)), 3000)
            for c in chunks[:3]
        ]
    )
    prompts = [
        tokenizer.encode(" So, you know, we talked about the weather and the rivers today."),
        [],
        tokenizer.encode(" Mountains."),
    ]
    options = DecodingOptions(language="en", fp16=False)
    alone = [
        whisper.decode(loaded.model, mel, dataclasses.replace(options, prompt=p or None))
        for mel, p in zip(mels, prompts, strict=True)
    ]
    assert_same_decodes(decode_batch(loaded.model, mels, options, prompts=prompts), alone)
    assert all(len(r.tokens) > 5 for r in alone)


@pytest.mark.slow
def test_conditioned_text_does_not_depend_on_the_batch(chunks: list[Chunk]) -> None:
    options = TranscribeOptions(condition_chunks=2)
    loaded = load_model(options)
    alone = transcribe_chunks_batched(chunks, options, batch_size=1, loaded=loaded)
    together = transcribe_chunks_batched(chunks, options, batch_size=len(chunks), loaded=loaded)
    assert _texts(alone) == _texts(together)
    assert all(r.options["condition_chunks"] == 2 for r in together)
    # A chunk decoded on its own after its predecessor's result gives the same text.
    second = transcribe_chunks_batched(
        chunks[1:2], options, batch_size=1, loaded=loaded, known={chunks[0].index: together[0]}
    )
    assert _texts(second) == _texts(together[1:2])
    # ... and that text reached the decoder as its prompt, after the initial prompt.
    engine = BatchTranscriber(dataclasses.replace(options, initial_prompt="Podcasts."), loaded)
    state = engine.start(chunks[1], context=together[0].text)
    expected = engine.tokenizer.encode(" Podcasts.") + engine.tokenizer.encode(
        " " + together[0].text
    )
    assert list(engine.prompt_of(state)) == expected[-223:]


@pytest.mark.slow
def test_the_prompt_is_dropped_after_a_temperature_fallback(chunks: list[Chunk]) -> None:
    # A logprob threshold no decode can meet sends every window down the sampled ladder to
    # 0.6: no chunk hands its (failed) text on, so each decodes as if cold.
    hot = TranscribeOptions(logprob_threshold=0.0, temperatures=(0.0, 0.6))
    loaded = load_model(hot)
    part = chunks[:3]
    cold = transcribe_chunks_batched(part, hot, batch_size=3, loaded=loaded)
    conditioned = dataclasses.replace(hot, condition_chunks=8)
    got = transcribe_chunks_batched(part, conditioned, batch_size=3, loaded=loaded)
    assert {s.temperature for r in got for s in r.segments} == {0.6}
    assert _texts(got) == _texts(cold)


def test_a_repair_retry_is_decoded_cold() -> None:
    # The retry decodes one flagged chunk alone, with beams: no predecessor text.
    retry = RepairPolicy().retry_options(
        TranscribeOptions(condition_chunks=8), ChunkFlags(0, hallucination=True)
    )
    assert retry.condition_chunks == 0
    assert retry.beam_size == 5
