"""Prefect flows on real audio, the real tiny.en model and a temporary Prefect server."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import LocalHTTPServer, Reply
from feedgen import Item, rss

pytestmark = pytest.mark.slow
DEMO_DIR = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "demo"


@pytest.fixture
def flow_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: str) -> Path:
    """Flows write under tmp_path (results, audio, transcripts, catalog)."""
    for name in ("results_dir", "audio_root", "transcripts_root"):
        monkeypatch.setenv(f"PODSCRIBE_{name.upper()}", str(tmp_path / name))
    monkeypatch.setenv("PODSCRIBE_DB", str(tmp_path / "catalog.db"))
    return tmp_path


def test_transcribe_episode_writes_outputs_and_quality_report(
    flow_env: Path, fixtures_dir: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.episode import transcribe_episode

    summary = transcribe_episode(
        source=str(fixtures_dir / "episode.mp3"), episode_id="Fixture_Episode.1",
        reference=str(fixtures_dir / "episode.txt"), title="Fixture episode", max_chunk_s=15.0,
    )
    assert summary["chunks"] >= 3
    assert summary["transcribed"] == list(range(summary["chunks"]))
    assert summary["wer"] is not None and summary["wer"] < 0.3
    out = flow_env / "transcripts_root" / "Fixture_Episode.1"
    assert {p.name for p in out.iterdir()} >= {"transcript.json", "transcript.srt", "score.json"}
    assert any((flow_env / "results_dir").iterdir()), "chunk results are persisted"
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["quality-fixture-episode-1"])))
    assert found and "Worst chunks" in str(found[0].data)

    from flows.episode import rerun_chunks

    again = rerun_chunks(episode_id="Fixture_Episode.1", chunk_indices=[1])
    assert again["transcribed"] == [1] and again["chunks"] == summary["chunks"]
    assert again["wer"] == pytest.approx(summary["wer"], abs=0.05)


def test_dask_task_runner_with_two_local_workers(flow_env: Path, fixtures_dir: Path) -> None:
    from flows.episode import transcribe_episode
    from flows.runners import make_task_runner
    from flows.settings import FlowSettings

    runner = make_task_runner(FlowSettings(task_runner="dask", dask_workers=2, workers=1))
    assert runner.cluster_kwargs["n_workers"] == 2
    summary = transcribe_episode.with_options(task_runner=runner)(
        source=str(fixtures_dir / "speech.ogg"), episode_id="dask-1",
        reference=str(fixtures_dir / "speech.txt"), max_chunk_s=4.0,
    )
    assert summary["chunks"] >= 2 and summary["transcribed"] == list(range(summary["chunks"]))
    assert summary["wer"] is not None and summary["wer"] < 0.8  # 4 s chunks: little context


def _demo_feed(server: LocalHTTPServer, numbers: list[int]) -> str:
    items = []
    for n in numbers:
        audio = server.route(f"/ep{n}.mp3", Reply((DEMO_DIR / f"episode-{n}.mp3").read_bytes(),
                                                  content_type="audio/mpeg"))
        text = server.route(f"/ep{n}.txt", Reply((DEMO_DIR / f"episode-{n}.txt").read_bytes(),
                                                 content_type="text/plain"))
        items.append(Item(title=f"Poll demo {n}", guid=f"demo-{n}", enclosure=(audio, "audio/mpeg"),
                          transcripts=((text, "text/plain"),),
                          published=f"Mon, 0{n} Jun 2025 10:00:00 GMT"))
    feed = Reply(rss("Poll demo", items), content_type="application/rss+xml")
    return server.route("/feed.xml", feed)


def _runs_named(name: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=[name])))
    return len(runs)


def test_poll_transcribes_new_episodes_once_and_survives_a_404_feed(
    flow_env: Path, http_server: LocalHTTPServer
) -> None:
    from flows.feeds import poll_feeds
    from pipeline import catalog

    feed_url = _demo_feed(http_server, [1, 2])
    missing = http_server.url("/gone.xml")  # 404
    first = poll_feeds(feeds=[missing, feed_url])
    assert first["failed_feeds"] == [missing]
    assert len(first["started"]) == 2 and first["skipped"] == []

    _demo_feed(http_server, [1, 2, 3])  # a new episode appears
    second = poll_feeds(feeds=[feed_url])
    assert len(second["started"]) == 1 and sorted(second["skipped"]) == sorted(first["started"])

    rows = catalog.list_episodes(flow_env / "catalog.db")
    assert [r.title for r in rows] == ["Poll demo 1", "Poll demo 2", "Poll demo 3"]
    assert [r.state for r in rows] == ["done"] * 3, rows
    assert all(r.last_wer is not None and r.last_wer < 0.5 for r in rows), rows
    assert second["started"] == [rows[2].episode_id]
    for n in (1, 2, 3):
        assert _runs_named(f"transcribe Poll demo {n}") == 1
        assert http_server.hits[f"/ep{n}.mp3"] == 1
