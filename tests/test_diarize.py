"""Speaker diarization: the options, speakers laid over segments, and the real diarizer on two
espeak-ng voices taking turns (tests/fixtures/dialogue.*, made by scripts/make_fixtures.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.audio.diarize import DiarizeOptions, mel_frames, parse_speakers
from pipeline.core.attribution import attribute_speakers
from pipeline.core.errors import OptionsError
from pipeline.core.types import Segment, SpeakerSpan, Word

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("given", "expected"),
    [("off", False), ("auto", None), (" AUTO ", None), ("2", 2), ("50", 50), (None, False)],
)
def test_parse_speakers(given: str | None, expected: int | None | bool) -> None:
    assert parse_speakers(given) == expected


@pytest.mark.parametrize("given", ["0", "51", "-1", "banana", "2.5", ""])
def test_parse_speakers_refuses_with_the_value_named(given: str) -> None:
    with pytest.raises(OptionsError, match="--speakers must be off, auto"):
        parse_speakers(given)


def test_options_are_validated() -> None:
    with pytest.raises(OptionsError, match="speakers must be 1-50"):
        DiarizeOptions(speakers=0)
    with pytest.raises(OptionsError, match="windows must satisfy"):
        DiarizeOptions(window_s=0.3)
    with pytest.raises(OptionsError, match="device"):
        DiarizeOptions(device="tpu")


def test_mel_frames_match_resemblyzers_librosa_features() -> None:
    librosa = pytest.importorskip("librosa")  # resemblyzer's own dependency
    x = np.random.default_rng(0).standard_normal(16000 * 2).astype(np.float32) * 0.1
    ours = mel_frames(x)
    theirs = librosa.feature.melspectrogram(y=x, sr=16000, n_fft=400, hop_length=160, n_mels=40).T
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max()


def _seg(start: float, end: float, text: str, words: tuple[Word, ...] | None = None) -> Segment:
    return Segment(start=start, end=end, text=text, chunk_index=0, words=words)


TURNS = (SpeakerSpan("A", 0.0, 4.1), SpeakerSpan("B", 4.3, 8.0))


def test_a_segment_is_cut_at_the_turn_change_between_its_words() -> None:
    words = (
        Word(0.5, 1.0, " So", 0.9),
        Word(1.0, 3.9, " really?", 0.9),
        Word(4.4, 4.9, " Yes,", 0.9),
        Word(5.0, 7.5, " of course.", 0.9),
    )
    out = attribute_speakers([_seg(0.4, 7.6, " So really? Yes, of course.", words)], TURNS)
    assert [(s.speaker, s.text, s.start, s.end) for s in out] == [
        ("A", " So really?", 0.4, 3.9),
        ("B", " Yes, of course.", 4.4, 7.6),
    ]
    assert [w.speaker for s in out for w in s.words or ()] == ["A", "A", "B", "B"]


def test_without_word_times_the_text_is_cut_in_proportion_at_a_space() -> None:
    text = " one two three four five six seven eight"
    out = attribute_speakers([_seg(0.0, 8.0, text)], TURNS)
    assert [s.speaker for s in out] == ["A", "B"]
    assert "".join(s.text for s in out) == text  # nothing lost, nothing added
    assert out[0].text == " one two three four"  # ~half the time, ~half the characters
    assert out[0].end == pytest.approx(out[1].start)


def test_a_sliver_of_another_speaker_does_not_cut_a_segment() -> None:
    out = attribute_speakers([_seg(3.9, 8.0, " only B really speaks here")], TURNS)
    assert [(s.speaker, s.start, s.end) for s in out] == [("B", 3.9, 8.0)]


def test_a_segment_in_a_pause_takes_the_nearest_speaker() -> None:
    out = attribute_speakers([_seg(8.5, 9.0, " late")], TURNS)
    assert out[0].speaker == "B"


# --- the real diarizer (speaker encoder inference: slow) --------------------------------------


def _decoded(tmp_path: Path, fixtures_dir: Path, name: str = "dialogue") -> Path:
    from pipeline.audio.decode import decode_audio
    from pipeline.core.store import sha256_file

    src = fixtures_dir / f"{name}.mp3"
    return decode_audio(src, tmp_path / f"{name}.wav", source_sha256=sha256_file(src)).path


@pytest.mark.slow
@pytest.mark.parametrize("speakers", [None, 2])
def test_two_espeak_voices_are_two_speakers_with_their_turns(
    speakers: int | None, tmp_path: Path, fixtures_dir: Path
) -> None:
    from pipeline.audio.diarize import diarize_audio
    from pipeline.quality.der import diarization_error
    from pipeline.sources.rttm import read_rttm

    found = diarize_audio(
        _decoded(tmp_path, fixtures_dir), "dialogue", DiarizeOptions(speakers=speakers)
    )
    reference = read_rttm(fixtures_dir / "dialogue.rttm")
    assert found.speakers == ("SPEAKER_1", "SPEAKER_2")
    der = diarization_error(reference, found.turns)
    assert der.der is not None and der.der < 0.15, der
    assert der.confusion_s < 1.0, der
    # every reference turn, the short "Right." too, is mostly its own speaker's
    mapping = dict(der.mapping)
    for ref in reference:
        held: dict[str, float] = {}
        for t in found.turns:
            d = min(ref.end, t.end) - max(ref.start, t.start)
            if d > 0:
                held[t.speaker] = held.get(t.speaker, 0.0) + d
        assert held, f"nothing found in {ref}"
        assert mapping[max(held, key=lambda k: held[k])] == ref.speaker, (ref, held)
    # provenance: both models with their hashes, the options, the code version
    models = {m["name"]: m for m in found.provenance["models"]}
    assert set(models) == {"silero_vad", "resemblyzer"}
    assert all(len(m["sha256"]) == 64 for m in models.values())
    assert found.provenance["options"]["speakers"] == speakers
    assert found.provenance["code_version"]


@pytest.mark.slow
def test_a_short_clip_is_counted_from_its_first_eigengaps_only(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """intro.mp3 is 37 s of two voices (35 clustered windows): far up the spectrum of so
    small a graph the eigenvalues spread apart, and taking the largest gap anywhere below
    max_speakers found 12 "speakers". A speaker needs MIN_SPEAKER_WINDOWS windows, so only
    the first n / MIN_SPEAKER_WINDOWS gaps count."""
    from pipeline.audio.diarize import MIN_SPEAKER_WINDOWS, diarize_audio

    found = diarize_audio(_decoded(tmp_path, fixtures_dir, "intro"), "intro", DiarizeOptions())
    clustered = found.provenance["found"]["clustered_windows"]
    assert clustered < 20 * MIN_SPEAKER_WINDOWS  # short enough that the cap applies
    assert found.speakers == ("SPEAKER_1", "SPEAKER_2"), found.provenance["found"]
    # "Hello and welcome …, I'm Alice." then "Thanks, Alice. I'm Bob …": the first two turns
    # are the two voices
    assert [t.speaker for t in found.turns[:1]] == ["SPEAKER_1"]
    assert "SPEAKER_2" in {t.speaker for t in found.turns if t.start < 8.0}


@pytest.mark.slow
def test_a_long_episode_is_clustered_on_evenly_taken_windows_and_labelled_whole(
    tmp_path: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past MAX_CLUSTERED windows (25 minutes of speech) the clustering sees a sample of
    them: here 12 of the dialogue's ~40, and still both voices and every turn are found."""
    from pipeline.audio import diarize
    from pipeline.quality.der import diarization_error
    from pipeline.sources.rttm import read_rttm

    monkeypatch.setattr(diarize, "MAX_CLUSTERED", 12)
    found = diarize.diarize_audio(_decoded(tmp_path, fixtures_dir), "dialogue", DiarizeOptions())
    assert found.provenance["found"]["clustered_windows"] == 12
    assert found.provenance["found"]["windows"] > 24
    assert found.speakers == ("SPEAKER_1", "SPEAKER_2")
    der = diarization_error(read_rttm(fixtures_dir / "dialogue.rttm"), found.turns)
    assert der.der is not None and der.der < 0.15, der


def test_an_empty_cluster_has_a_zero_centroid_not_nan() -> None:
    from pipeline.audio.diarize import _centroids

    emb = np.eye(3, dtype=np.float32)
    c = _centroids(emb, np.array([0, 0, 2]), 3)
    assert np.isfinite(c).all() and not c[1].any()


def podscribe(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


@pytest.mark.parametrize("value", ["0", "banana"])
def test_bad_speakers_is_one_line_before_any_work(
    value: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    done = podscribe("transcribe", fixtures_dir / "dialogue.mp3", "--speakers", value, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert lines[0].startswith("error: --speakers must be off, auto") and value in lines[0]
    assert not (tmp_path / "audio").exists() and not (tmp_path / "transcripts").exists()


@pytest.mark.slow
def test_transcribe_with_speakers_names_them_and_scores_them(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    done = podscribe(
        "transcribe", fixtures_dir / "dialogue.mp3",
        "--reference", fixtures_dir / "dialogue.txt",
        "--rttm", fixtures_dir / "dialogue.rttm",
        "--speakers", "auto", "--episode-id", "dialogue", "--json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["speakers"] == 2
    assert summary["der"] < 0.15
    assert summary["cpwer"] - summary["wer"] <= 0.03
    out = tmp_path / "transcripts" / "dialogue"
    transcript = json.loads((out / "transcript.json").read_text())
    reference = {s.split(":")[0] for s in (fixtures_dir / "dialogue.txt").read_text().splitlines()}
    # the labels took the reference's names (Host, Guest), and say how sure that is
    assert {s["speaker"] for s in transcript["segments"]} == reference
    naming = transcript["provenance"]["diarization"]["naming"]
    assert naming["agreement"] > 0.8
    # a segment never spans two speakers' turns
    turns = [line.split() for line in (out / "speakers.rttm").read_text().splitlines()]
    assert {t[7] for t in turns} == reference
    for s in transcript["segments"]:
        held = {
            t[7]
            for t in turns
            if min(s["end"], float(t[3]) + float(t[4])) - max(s["start"], float(t[3])) > 0.6
        }
        assert held <= {s["speaker"]}, (s, held)
    assert "Host: " in (out / "transcript.txt").read_text()
    diarization = json.loads((out / "diarization.json").read_text())
    assert diarization["provenance"]["options"]["speakers"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--speakers", "auto", "--person", " :host"], "error: person ' :host': give a name"),
        (["--person", "Alice"], "error: --person names the speakers the diarizer finds"),
    ],
)
def test_bad_person_is_one_line_before_any_work(
    args: list[str], message: str, tmp_path: Path, fixtures_dir: Path
) -> None:
    done = podscribe("transcribe", fixtures_dir / "intro.mp3", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(message), done.stderr
    assert not (tmp_path / "audio").exists() and not (tmp_path / "transcripts").exists()


@pytest.mark.slow
def test_speakers_are_named_after_the_feeds_persons_from_what_they_say(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """intro.mp3: two voices; "…I'm Alice." / "Thanks, Alice. I'm Bob…" / "Bob, what…"; no
    labelled reference, only the persons a feed would list (and one who never speaks)."""
    from pipeline.core.types import Person
    from pipeline.episode import run_episode
    from pipeline.sources.reference import read_reference

    persons = (Person("Alice Smith"), Person("Bob Jones", "guest"), Person("Carol", "producer"))
    result = run_episode(
        str(fixtures_dir / "intro.mp3"),
        reference=read_reference(str(fixtures_dir / "intro.txt")),  # plain text: no names
        episode_id="intro",
        audio_root=tmp_path / "audio",
        transcripts_root=tmp_path / "transcripts",
        diarize_options=DiarizeOptions(),  # --speakers auto
        persons=persons,
    )
    transcript = json.loads((result.out_dir / "transcript.json").read_text())
    speakers = [s["speaker"] for s in transcript["segments"]]
    assert set(speakers) == {"Alice Smith", "Bob Jones"}
    assert speakers[0] == "Alice Smith"  # she opens the show
    bob = next(s for s in transcript["segments"] if "I'm Bob" in s["text"])
    assert bob["speaker"] == "Bob Jones"
    naming = transcript["provenance"]["diarization"]["naming"]
    assert naming["by"] == "feed" and naming["candidates"] == ["Alice Smith", "Bob Jones", "Carol"]
    assert naming["agreement"] >= 0.75
    kinds = {(e["name"], e["kind"]) for e in naming["evidence"]}
    assert ("Bob Jones", "self") in kinds and ("Alice Smith", "address") in kinds
    # the diarizer's own turns carry the names too (RTTM fields have no spaces)
    rttm = (result.out_dir / "speakers.rttm").read_text().splitlines()
    assert {line.split()[7] for line in rttm} == {"Alice_Smith", "Bob_Jones"}
    assert all(len(line.split()) == 10 for line in rttm)
