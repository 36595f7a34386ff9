"""Back-catalogue mode (``podscribe backfill``): queued episodes of a local feed claimed once,
their chunks transcribed in shared batches with the real tiny.en model, each episode's
outputs equal to transcribing it alone, and one failing episode costing only itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import LocalHTTPServer, Reply, serve_demo_episode
from feedgen import Item, rss
from typer.testing import CliRunner

from pipeline.asr.options import TranscribeOptions
from pipeline.audio.chunk import ChunkOptions
from pipeline.backfill import BackfillOptions, backfill_feed, claim_backlog, feed_url
from pipeline.core.store import read_json
from pipeline.core.types import Transcript
from pipeline.episode import run_episode
from pipeline.quality.history import HISTORY_NAME
from pipeline.sources import catalog
from pipeline.sources.feed import fetch_feed
from pipeline.sources.net import FetchLimits
from pipeline.sources.reference import read_reference

DEMO_DIR = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "demo"
LOCAL = FetchLimits(allow_private_networks=True)
# Short chunks and small batches: two short episodes make several batches, some of them mixed.
CHUNKS = ChunkOptions(max_chunk_s=8.0, min_chunk_s=4.0, search_s=4.0)
BATCH = 3


def _serve_feed(server: LocalHTTPServer, numbers: list[int], missing: list[int]) -> str:
    """A feed of demo episodes ``numbers`` (with their reference texts) and items whose
    enclosures answer 404 (``missing``), published in that order."""
    items = []
    for day, n in enumerate([*numbers, *missing], start=1):
        transcripts: tuple[tuple[str, str], ...]
        if n in numbers:
            audio, transcripts = serve_demo_episode(server, n)
        else:
            audio, transcripts = server.url(f"/gone{n}.mp3"), ()
        items.append(
            Item(
                title=f"Backlog {n}",
                guid=f"backlog-{n}",
                enclosure=(audio, "audio/mpeg"),
                transcripts=transcripts,
                published=f"Mon, 0{day} Jun 2025 10:00:00 GMT",
            )
        )
    return server.route(
        "/feed.xml", Reply(rss("Backlog", items), content_type="application/rss+xml")
    )


def test_claims_are_exactly_once_and_limited(tmp_path: Path, http_server: LocalHTTPServer) -> None:
    db = tmp_path / "catalog.db"
    feed = fetch_feed(_serve_feed(http_server, [1, 2, 3], []), limits=LOCAL)
    first = claim_backlog(db, feed, limit=2)
    assert [r.title for r in first] == ["Backlog 1", "Backlog 2"]  # oldest first
    assert all(r.state == "running" and r.attempts == 1 for r in first)
    second = claim_backlog(db, feed)  # another backfill (or a poll) gets only the rest
    assert [r.title for r in second] == ["Backlog 3"]
    assert claim_backlog(db, feed) == []
    assert feed_url(db, feed.feed_id) == feed.url  # a feed id stands for its URL
    assert feed_url(db, "elsewhere.xml") == "elsewhere.xml"


def test_failed_downloads_are_marked_failed_and_nothing_else_is_claimed(
    tmp_path: Path, http_server: LocalHTTPServer
) -> None:
    """Every enclosure 404s: each episode fails with its own error, no model runs, and a
    second backfill finds nothing due (their retries wait for the backoff)."""
    db = tmp_path / "catalog.db"
    feed = fetch_feed(_serve_feed(http_server, [], [7, 8]), limits=LOCAL)
    options = BackfillOptions(
        audio_root=tmp_path / "audio", transcripts_root=tmp_path / "out", fetch_limits=LOCAL
    )
    result = backfill_feed(feed, db, options)
    assert [o.state for o in result.outcomes] == ["failed", "failed"]
    assert all("404" in (o.error or "") for o in result.outcomes), result.outcomes
    rows = catalog.list_episodes(db)
    assert [r.state for r in rows] == ["failed", "failed"]
    assert all(r.next_attempt_at is not None and "404" in (r.last_error or "") for r in rows)
    assert backfill_feed(feed, db, options).outcomes == ()
    assert not (tmp_path / "out" / HISTORY_NAME).exists()


def _timed_text(transcript: Transcript) -> list[tuple[float, float, str, int]]:
    return [(s.start, s.end, s.text, s.chunk_index) for s in transcript.segments]


def test_an_unknown_model_fails_before_anything_is_claimed(
    tmp_path: Path, http_server: LocalHTTPServer
) -> None:
    from pipeline.core.errors import ModelError

    db = tmp_path / "catalog.db"
    feed = fetch_feed(_serve_feed(http_server, [1], []), limits=LOCAL)
    options = BackfillOptions(transcribe=TranscribeOptions(model="no-such-model"))
    with pytest.raises(ModelError, match="unknown model 'no-such-model'"):
        backfill_feed(feed, db, options)
    assert not catalog.catalog_exists(db)  # nothing recorded, nothing claimed
    assert http_server.hits["/ep1.mp3"] == 0


def test_chunks_of_several_episodes_come_back_in_the_order_given(
    tmp_path: Path, run_ffmpeg
) -> None:
    """Chunk indices repeat across episodes: results are routed by position (silent chunks
    here, which need the loaded model but no inference)."""
    from pipeline.asr.loading import load_model
    from pipeline.asr.transcribe import transcribe_chunks
    from pipeline.episode import prepare_episode

    manifests = []
    for name, seconds in (("quiet-a", 20), ("quiet-b", 13)):
        wav = run_ffmpeg(
            "-f", "lavfi", "-i", f"anullsrc=r=16000:cl=mono:d={seconds}", tmp_path / f"{name}.wav"
        )
        manifests.append(prepare_episode(str(wav), name, tmp_path / "audio", CHUNKS))
    chunks = [c for m in manifests for c in m.chunks]
    assert len({c.index for c in chunks}) < len(chunks)  # indices repeat
    options = TranscribeOptions(batch_size=BATCH)
    heard: list[str] = []
    results = transcribe_chunks(
        chunks,
        options,
        on_done=lambda ct: heard.append(ct.chunk_sha256),
        loaded=load_model(options),
    )
    assert [(r.chunk_index, r.chunk_sha256, r.start_s) for r in results] == [
        (c.index, c.sha256, c.start_s) for c in chunks
    ]
    assert all(r.segments == () for r in results) and len(heard) == len(chunks)


def test_each_episode_gets_its_share_of_the_shared_transcription() -> None:
    from pipeline.backfill import shares_of
    from pipeline.core.errors import AudioError
    from pipeline.core.types import ChunkTranscript, ModelInfo

    model = ModelInfo("tiny.en", "0" * 64, "test", Path("tiny.en.pt"))

    def chunk(index: int, elapsed_s: float) -> ChunkTranscript:
        return ChunkTranscript(index, "0" * 64, 0.0, 1.0, (), model, {}, elapsed_s)

    shares = shares_of(
        {"a": [chunk(0, 1.0), chunk(1, 2.0)], "b": [chunk(0, 1.0)], "c": AudioError("x")}, 8.0
    )
    assert shares == {"a": pytest.approx(6.0), "b": pytest.approx(2.0)}  # c failed: no share
    assert shares_of({"a": [chunk(0, 0.0)], "b": []}, 4.0) == {"a": 2.0, "b": 2.0}


@pytest.mark.slow
def test_backfill_shares_batches_and_equals_per_episode_runs(
    tmp_path: Path, http_server: LocalHTTPServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipeline.asr.batch import BatchTranscriber

    # Which episodes' chunks each decoder batch held (the real run_batch is called).
    batches: list[set[str]] = []
    run_batch = BatchTranscriber.run_batch

    def spy(self: BatchTranscriber, states: list) -> None:
        batches.append({s.chunk.path.parent.parent.name for s in states})
        run_batch(self, states)

    monkeypatch.setattr(BatchTranscriber, "run_batch", spy)
    db = tmp_path / "catalog.db"
    url = _serve_feed(http_server, [1, 2], [9])
    transcribe = TranscribeOptions(batch_size=BATCH)
    options = BackfillOptions(
        transcribe=transcribe,
        chunk=CHUNKS,
        audio_root=tmp_path / "audio",
        transcripts_root=tmp_path / "out",
        fetch_limits=LOCAL,
    )
    result = backfill_feed(fetch_feed(url, limits=LOCAL), db, options)

    states = {o.title: o.state for o in result.outcomes}
    assert states == {"Backlog 1": "done", "Backlog 2": "done", "Backlog 9": "failed"}
    failed = next(o for o in result.outcomes if o.state == "failed")
    assert "404" in (failed.error or "")
    rows = {r.title: r for r in catalog.list_episodes(db)}
    assert {t: r.state for t, r in rows.items()} == states
    assert all(rows[t].last_wer is not None for t in ("Backlog 1", "Backlog 2"))
    assert any(len(episodes) > 1 for episodes in batches), batches  # batches were shared
    assert all(http_server.hits[f"/ep{n}.mp3"] == 1 for n in (1, 2))
    history = (tmp_path / "out" / HISTORY_NAME).read_text().splitlines()
    assert len(history) == 2

    # Each episode alone, in folders of its own (no stored chunk to reuse): the same text,
    # segments and score.
    for o in result.done:
        assert o.result is not None
        n = o.title.split()[-1]
        alone = run_episode(
            str(DEMO_DIR / f"episode-{n}.mp3"),
            reference=read_reference(DEMO_DIR / f"episode-{n}.txt"),
            transcribe_options=transcribe,
            chunk_options=CHUNKS,
            episode_id=o.episode_id,
            audio_root=tmp_path / "alone-audio",
            transcripts_root=tmp_path / "alone-out",
        )
        assert alone.chunks == o.result.chunks >= 2
        assert alone.transcript.text == o.result.transcript.text
        # Text and times exactly; log-probabilities up to float rounding (batch shapes differ).
        assert _timed_text(alone.transcript) == _timed_text(o.result.transcript)
        assert [s.avg_logprob for s in alone.transcript.segments] == pytest.approx(
            [s.avg_logprob for s in o.result.transcript.segments], rel=1e-4
        )
        assert alone.score is not None and o.result.score is not None
        assert alone.score.wer == o.result.score.wer
        run = read_json(o.result.out_dir / "run.json")
        assert run["feed"] == rows[o.title].feed_id
        assert run["title"] == o.title

    # Nothing is claimed again: the done episodes are done, the failed one waits its backoff.
    again = backfill_feed(fetch_feed(url, limits=LOCAL), db, options)
    assert again.outcomes == ()
    assert all(http_server.hits[f"/ep{n}.mp3"] == 1 for n in (1, 2))


@pytest.mark.slow
def test_backfill_command_prints_a_summary(tmp_path: Path, http_server: LocalHTTPServer) -> None:
    from pipeline.cli.app import app

    url = _serve_feed(http_server, [1], [5])
    env = {
        "PODSCRIBE_DB": str(tmp_path / "catalog.db"),
        "PODSCRIBE_AUDIO_ROOT": str(tmp_path / "audio"),
        "PODSCRIBE_TRANSCRIPTS_ROOT": str(tmp_path / "out"),
        "PODSCRIBE_ALLOW_PRIVATE_NETWORKS": "true",
    }
    args = ["backfill", url, "--limit", "5", "--batch-size", "4", "--no-repair", "--json"]
    ran = CliRunner().invoke(app, args, env=env)
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout.strip().splitlines()[-1])
    assert [e["state"] for e in summary["episodes"]] == ["done", "failed"]
    assert summary["done"] == 1 and summary["episodes_per_hour"] > 0
    assert summary["episodes"][0]["wer"] is not None
    feed_id = catalog.list_feeds(tmp_path / "catalog.db")[0].feed_id
    again = CliRunner().invoke(app, ["backfill", feed_id, "--json"], env=env)  # by feed id
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["episodes"] == []


@pytest.mark.slow
def test_backfill_flow_runs_the_same_steps_as_tasks(
    tmp_path: Path,
    http_server: LocalHTTPServer,
    monkeypatch: pytest.MonkeyPatch,
    prefect_api: str,
) -> None:
    from flows.feeds import backfill

    for name in ("results_dir", "audio_root", "transcripts_root"):
        monkeypatch.setenv(f"PODSCRIBE_{name.upper()}", str(tmp_path / name))
    monkeypatch.setenv("PODSCRIBE_DB", str(tmp_path / "catalog.db"))
    monkeypatch.setenv("PODSCRIBE_ALLOW_PRIVATE_NETWORKS", "true")
    url = _serve_feed(http_server, [1, 2], [6])
    summary = backfill(feed=url, limit=5, batch_size=4, repair=False)
    rows = {r.title: r for r in catalog.list_episodes(tmp_path / "catalog.db")}
    assert {t: r.state for t, r in rows.items()} == {
        "Backlog 1": "done",
        "Backlog 2": "done",
        "Backlog 6": "failed",
    }
    assert sorted(summary["done"]) == sorted(rows[t].episode_id for t in ("Backlog 1", "Backlog 2"))
    assert "404" in summary["failed"][rows["Backlog 6"].episode_id]
    for title in ("Backlog 1", "Backlog 2"):
        out = tmp_path / "transcripts_root" / rows[title].episode_id
        assert read_json(out / "run.json")["title"] == title
        assert read_json(out / "score.json")["wer"] is not None
    # By its feed id this time: nothing is due any more.
    again = backfill(feed=rows["Backlog 1"].feed_id)
    assert again == {"done": [], "failed": {}}
