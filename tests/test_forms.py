"""What the Prefect UI shows and accepts, checked without a server: the run forms' schemas,
chunk numbers as users type them, run outcomes as one line, and finding an episode by title."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest

from flows.deploy import build_deployments
from flows.episode import chosen_chunks, rerun_chunks, transcribe_episode
from flows.feeds import backfill, poll_feeds
from flows.forms import KnownModel, form_schema
from flows.report import chunk_rows, one_line, outcome_message
from pipeline.asr.weights import list_models
from pipeline.core.errors import OptionsError
from pipeline.core.types import Chunk, ChunkManifest, DecodedAudio
from pipeline.episode import find_episode

FLOWS = [transcribe_episode, rerun_chunks, poll_feeds, backfill]


@pytest.mark.parametrize("flow", FLOWS, ids=lambda f: f.name)
def test_every_parameter_has_a_title_and_a_description(flow) -> None:
    props = form_schema(flow).properties
    assert props
    for name, prop in props.items():
        assert prop.get("description"), name
        assert prop["title"] != name and prop["title"][0].isupper(), (name, prop["title"])


def test_model_and_device_offer_their_choices() -> None:
    props = form_schema(transcribe_episode).properties
    assert props["device"]["enum"] == ["auto", "cpu", "cuda"]
    for flow in (transcribe_episode, poll_feeds, backfill):  # every flow that transcribes
        style = form_schema(flow).properties["style"]
        assert style["enum"] == ["clean", "verbatim"] and style["default"] == "clean"
    names, other = props["model"]["anyOf"]
    available = [m.name for m in list_models() if m.available]
    assert "tiny.en" in available
    assert names["enum"][: len(available)] == available  # this machine's models first
    assert set(names["enum"]) == {m.name for m in list_models()}
    assert other["type"] == "string"  # a .pt path still goes
    assert "On this machine now: " + ", ".join(available) in props["model"]["description"]


def test_known_models_are_the_ones_podscribe_can_resolve() -> None:
    assert set(get_args(KnownModel)) == {m.name for m in list_models()}


def test_deployments_describe_themselves_and_cap_episode_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PODSCRIBE_EPISODE_RUNS", "3")
    deployments = {d.name: d for d in build_deployments(poll_every_min=None)}
    assert set(deployments) == {"transcribe-episode", "rerun-chunks", "poll-feeds", "backfill-feed"}
    for name in ("transcribe-episode", "rerun-chunks"):
        assert deployments[name].concurrency_limit == 3
    assert deployments["poll-feeds"].concurrency_limit is None
    assert deployments["backfill-feed"].concurrency_limit == 1  # one fills the device
    assert "Retry" in deployments["transcribe-episode"].description
    assert "chunk numbers" in deployments["transcribe-episode"].description
    assert "by title or id" in deployments["rerun-chunks"].description
    schema = deployments["rerun-chunks"]._parameter_openapi_schema.properties
    assert schema["chunk_numbers"]["title"] == "Chunks"


def _manifest(n: int, tmp_path: Path) -> ChunkManifest:
    audio = DecodedAudio(tmp_path / "x.wav", n * 160_000, "0" * 64)
    chunks = tuple(
        Chunk(i, i * 160_000, (i + 1) * 160_000, tmp_path / f"c{i}.wav", "0" * 64, "silence")
        for i in range(n)
    )
    return ChunkManifest("ep", audio, chunks, {})


def test_chunks_are_chosen_by_the_numbers_the_task_names_show(tmp_path: Path) -> None:
    manifest = _manifest(3, tmp_path)
    assert chosen_chunks(manifest, [1, 3]) == {0, 2}  # "chunk 1/3" and "chunk 3/3"
    for wrong in ([0], [4], []):
        with pytest.raises(OptionsError, match=r"it has chunks 1\.\.3 .*'chunk n/3'"):
            chosen_chunks(manifest, wrong)


def test_chunk_table_counts_from_one_in_percent_with_an_error_column(tmp_path: Path) -> None:
    rows = chunk_rows(
        _manifest(2, tmp_path), {0: "completed", 1: "failed"}, None, {1: "chunk 2 changed"}
    )
    assert [r["chunk"] for r in rows] == [1, 2]
    assert rows[0]["WER"] == "–" and rows[0]["error"] == ""
    assert rows[1]["status"] == "failed" and rows[1]["error"] == "chunk 2 changed"


def test_outcome_is_one_line_with_the_wer_in_percent() -> None:
    summary = {"wer": 0.0683, "chunks": 41, "flagged": [3, 7], "repaired": [7]}
    assert outcome_message(summary) == "WER 6.8% · 41 chunks · 2 flagged, 1 repaired"
    assert outcome_message(summary | {"wer": None}).startswith("not scored · 41 chunks")
    assert one_line(OptionsError("first line\nsecond")) == "first line"


def test_find_episode_by_id_or_title(tmp_path: Path) -> None:
    for episode_id, title in (("ep-1", "The River"), ("ep-2", "Mountains"), ("ep-3", None)):
        (tmp_path / episode_id).mkdir()
        (tmp_path / episode_id / "run.json").write_text(json.dumps({"title": title}))
    assert find_episode("ep-1", tmp_path).title == "The River"
    assert find_episode("  the river ", tmp_path).episode_id == "ep-1"
    assert find_episode("ep-3", tmp_path).title == "ep-3"
    with pytest.raises(OptionsError, match="no transcribed episode .* 'Oceans'.*'The River'"):
        find_episode("Oceans", tmp_path)
    (tmp_path / "ep-4").mkdir()
    (tmp_path / "ep-4" / "run.json").write_text(json.dumps({"title": "Mountains"}))
    with pytest.raises(OptionsError, match="2 episodes are titled 'Mountains'"):
        find_episode("Mountains", tmp_path)


def test_a_polled_episode_runs_with_the_polls_style_and_only_parameters_it_takes() -> None:
    import inspect

    from flows.feeds import _parameters
    from pipeline.sources.catalog import EpisodeRow

    row = EpisodeRow(
        "ep", "feed", "guid", "Title", "https://example.org/a.mp3", None, None, "running", None,
        None, "2026-11-30T00:00:00Z",
    )  # fmt: skip
    params = _parameters(row, "tiny.en", "cpu", "verbatim")
    assert params["style"] == "verbatim" and params["model"] == "tiny.en"
    # A deployment run refuses parameters its flow does not have.
    assert set(params) <= set(inspect.signature(transcribe_episode.fn).parameters)
