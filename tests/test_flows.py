"""Prefect flows on real audio, the real tiny.en model and a temporary Prefect server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LocalHTTPServer, Reply, serve_demo_episode
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
    flow_env: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    import flows.episode
    from flows.episode import transcribe_episode
    from pipeline.asr.cache import STORE_DIRNAME, ChunkResultStore
    from pipeline.asr.microbatch import shared_batcher
    from pipeline.core.transcript import load_transcript

    # However slow this machine's API server is, let the slot acquisition finish before the
    # chunks are handed over (the wait ends as soon as it has).
    monkeypatch.setattr(flows.episode, "RESERVE_WAIT_S", 120.0)
    progress: list[float] = []
    update = flows.episode.update_progress_artifact

    def spy(artifact_id, value):
        progress.append(value)
        return update(artifact_id, value)

    monkeypatch.setattr(flows.episode, "update_progress_artifact", spy)

    claimed = shared_batcher().claimed_ahead
    summary = transcribe_episode(
        source=str(fixtures_dir / "episode.mp3"),
        episode_id="Fixture_Episode.1",
        reference=str(fixtures_dir / "episode.txt"),
        title="Fixture episode",
        max_chunk_s=15.0,
        style="verbatim",
    )
    assert summary["chunks"] >= 3
    # A first attempt hands its first batch to the batcher before the chunk tasks start;
    # each of those tasks then claims its chunk's result instead of queueing it again.
    assert shared_batcher().claimed_ahead - claimed == min(summary["chunks"], 8)
    # chunks by the numbers users see (the task names "chunk n/N" count from 1)
    assert summary["transcribed"] == list(range(1, summary["chunks"] + 1))
    assert summary["wer"] is not None and summary["wer"] < 0.3
    # The progress artifact rises to 100% (at most once per finished chunk on the way).
    assert progress[-1] == 100.0 and progress == sorted(progress)
    assert len(progress) <= summary["chunks"]
    out = flow_env / "transcripts_root" / "Fixture_Episode.1"
    assert {p.name for p in out.iterdir()} >= {"transcript.json", "transcript.srt", "score.json"}
    assert any((flow_env / "results_dir").iterdir()), "chunk results are persisted"
    # ... and stored by content, so a new run of the episode (not only a Retry) reuses them.
    store = ChunkResultStore(flow_env / "audio_root" / STORE_DIRNAME)
    assert store.count() == summary["chunks"]
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["quality-fixture-episode-1"])
            )
        )
    assert found and "Worst chunks" in str(found[0].data)
    # The chunk table is created off the flow's thread, still as an artifact of the run.
    with get_client(sync_client=True) as client:
        table = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["chunks-fixture-episode-1"]))
        )
    assert table and table[0].flow_run_id is not None
    assert table[0].flow_run_id == found[0].flow_run_id

    from flows.episode import rerun_chunks

    # by title, and the last chunk by the number its task name shows ("chunk N/N")
    last = summary["chunks"]
    again = rerun_chunks(episode="fixture EPISODE", chunk_numbers=[last])
    assert again["transcribed"] == [last] and again["chunks"] == last
    assert again["episode_id"] == "Fixture_Episode.1"
    assert again["wer"] == pytest.approx(summary["wer"], abs=0.05)
    # The chunk done again is in the style the episode was transcribed in.
    redone = load_transcript(out / "transcript.json")
    assert {c.options["style"] for c in redone.chunks} == {"verbatim"}
    assert _runs_named(f"rerun chunks {last} of Fixture episode") == 1


def test_background_calls_run_in_order_before_close_and_failures_do_not_fail_the_run(
    prefect_api: str,
) -> None:
    import time

    from prefect import flow
    from prefect.context import FlowRunContext

    from flows.episode import Background

    calls: list[tuple[str, object]] = []

    def slow(name: str) -> None:
        time.sleep(0.2)
        run = FlowRunContext.get()  # the flow's context travels to the background thread
        calls.append((name, run.flow_run.id if run and run.flow_run else None))

    def broken() -> None:
        raise RuntimeError("API down")

    @flow
    def with_background() -> tuple[object, None]:
        background = Background()
        background.submit(slow, "first")
        background.submit(broken)
        background.submit(slow, "third")
        assert calls == []  # the flow did not wait for them
        background.close()
        run = FlowRunContext.get()
        return run.flow_run.id if run and run.flow_run else None, None

    run_id, _ = with_background()
    assert [name for name, _ in calls] == ["first", "third"]
    assert all(flow_run_id == run_id for _, flow_run_id in calls) and run_id is not None


def test_flow_repairs_a_flagged_chunk_as_a_task_run(
    flow_env: Path, fixtures_dir: Path, run_ffmpeg
) -> None:
    """An episode whose second chunk is music: the check flags it (sound without speech, or
    words over music) and the flow transcribes it once more in a task run of its own, as the
    CLI's repair step does; the repair is in the quality report."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.episode import transcribe_episode
    from pipeline.quality.report import load_report_input

    chord = (
        "aevalsrc='0.15*(0.6+0.4*sin(2*PI*4*t))*(sin(2*PI*220*t)+sin(2*PI*277.18*t)"
        "+sin(2*PI*329.63*t))':s=16000:d=9"
    )
    episode = run_ffmpeg(
        "-i",
        fixtures_dir / "speech.ogg",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=16000:cl=mono:d=1.5",
        "-f",
        "lavfi",
        "-i",
        chord,
        "-filter_complex",
        "[0:a]aresample=16000,aformat=channel_layouts=mono[s];[s][1:a][2:a]concat=n=3:v=0:a=1",
        flow_env / "speech-then-music.flac",
    )
    summary = transcribe_episode(
        source=str(episode), episode_id="music-copy", title="Music copy", max_chunk_s=10.0
    )
    report = load_report_input(flow_env / "transcripts_root" / "music-copy")
    assert report.quality is not None and report.quality.repairs
    starts = {c.chunk_index: c.start_s for c in report.transcript.chunks}
    # Only music chunks are repaired (the speech ends at 6 s).
    assert all(starts[r.chunk_index] >= 6.0 and r.flags_before for r in report.quality.repairs)
    with get_client(sync_client=True) as client:
        (run,) = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name={"any_": ["transcribe Music copy"]})
        )
        names = {
            t.name: t.state_name
            for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
            )
        }
    total = summary["chunks"]
    for r in report.quality.repairs:
        assert names.get(f"repair chunk {r.chunk_index + 1}/{total} · Music copy") == "Completed"
    assert sum(name.startswith("repair chunk") for name in names) == len(report.quality.repairs)
    assert "check chunks of Music copy" in names


def test_dask_task_runner_with_two_local_workers(flow_env: Path, fixtures_dir: Path) -> None:
    from flows.episode import transcribe_episode
    from flows.runners import make_task_runner
    from flows.settings import Settings

    runner = make_task_runner(Settings(task_runner="dask", dask_workers=2, workers=1))
    assert runner.cluster_kwargs["n_workers"] == 2
    summary = transcribe_episode.with_options(task_runner=runner)(
        source=str(fixtures_dir / "speech.ogg"),
        episode_id="dask-1",
        reference=str(fixtures_dir / "speech.txt"),
        max_chunk_s=5.0,  # the form's floor: still two chunks of the 6 s fixture
    )
    assert summary["chunks"] >= 2 and summary["transcribed"] == list(
        range(1, summary["chunks"] + 1)
    )
    assert summary["wer"] is not None and summary["wer"] < 0.8  # 5 s chunks: little context


def _demo_feed(server: LocalHTTPServer, numbers: list[int]) -> str:
    items = []
    for n in numbers:
        audio, transcripts = serve_demo_episode(server, n)
        items.append(
            Item(
                title=f"Poll demo {n}",
                guid=f"demo-{n}",
                enclosure=(audio, "audio/mpeg"),
                transcripts=transcripts,
                published=f"Mon, 0{n} Jun 2025 10:00:00 GMT",
            )
        )
    feed = Reply(rss("Poll demo", items), content_type="application/rss+xml")
    return server.route("/feed.xml", feed)


def _runs_named(name: str) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
        )
    return len(runs)


def test_poll_transcribes_new_episodes_once_and_survives_a_404_feed(
    flow_env: Path, http_server: LocalHTTPServer
) -> None:
    from flows.feeds import poll_feeds
    from pipeline.sources import catalog

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


def _active_slots(name: str) -> int:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name).active_slots


def test_slot_lender_acquires_in_bulk_within_the_limit_and_releases(prefect_api: str) -> None:
    import threading
    import time

    from flows.device import SlotLender, ensure_device_limit

    name = "lender-test"
    assert ensure_device_limit(3, name=name) == 3
    # Two lenders stand for two processes sharing the limit.
    lenders = [SlotLender(name), SlotLender(name)]
    inside = [0, 0]
    peak = [0]
    seen_active: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(10)

    def user(i: int) -> None:
        lender = lenders[i % 2]
        start.wait()
        with lender.slot():
            with lock:
                inside[i % 2] += 1
                peak[0] = max(peak[0], sum(inside))
                assert inside[i % 2] <= lender.held
            seen_active.append(_active_slots(name))
            time.sleep(0.3)
            with lock:
                inside[i % 2] -= 1

    threads = [threading.Thread(target=user, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert peak[0] == 3  # the limit was used in full, never exceeded
    assert max(seen_active) <= 3
    # Slots are lent on locally: far fewer acquisitions than users.
    assert sum(lender.acquisitions for lender in lenders) < 10
    assert lenders[0].held == lenders[1].held == 0
    assert _wait_for_no_active(name)  # the helper threads hand the groups back


def test_slots_taken_ahead_are_claimed_by_their_keys_or_given_back(prefect_api: str) -> None:
    from flows.device import SlotLender, ensure_device_limit

    name = "lender-ahead-test"
    ensure_device_limit(3, name=name)
    lender = SlotLender(name)
    with lender.reserve(5) as reservation:  # 5 users expected, the limit grants 3
        assert reservation.wait(60.0) and lender.held == 3
        # One slot per key while idle ones last: the third key's slot, the fourth none.
        assert reservation.take_ahead(["a", "b", "c", "d"]) == ["a", "b", "c"]
        assert reservation.take_ahead(["d"]) == []
        acquisitions = lender.acquisitions
        with lender.slot("a"):  # claims its slot: no acquisition, still 3 held
            assert lender.held == 3 and _active_slots(name) == 3
        assert lender.acquisitions == acquisitions
        # "b" is never claimed; "a" came back idle and is lent to the next user.
        with lender.slot():
            assert lender.held == 3
    assert lender.held == 0  # closing gave back "b" and "c" with the rest
    assert _wait_for_no_active(name)
    with lender.slot("c"):  # its reservation is closed: an ordinary slot
        assert lender.held == 1
    assert lender.held == 0


def test_slot_lender_takes_what_is_free_while_another_process_holds_slots(
    prefect_api: str,
) -> None:
    import threading

    from flows.device import SlotLender, ensure_device_limit

    name = "lender-partial-test"
    ensure_device_limit(4, name=name)
    other, lender = SlotLender(name), SlotLender(name)  # two processes on one limit
    with other.reserve(3) as held:
        assert held.wait(60.0) and other.held == 3
        with lender.reserve(4) as reservation:
            # One slot is free: it is granted now, not after the other process lets go.
            assert reservation.wait(30.0) and lender.held == 1
            assert _active_slots(name) == 4
            got = threading.Event()

            def user() -> None:
                with lender.slot(), lender.slot():  # a second slot: only the other's
                    got.set()

            waiting = threading.Thread(target=user)
            waiting.start()
            assert not got.wait(1.0)  # the limit is full
        # (closing the other's reservation below frees its slots)
    waiting.join(timeout=60)
    assert got.is_set() and not waiting.is_alive()
    assert other.held == 0 and lender.held == 0
    assert _wait_for_no_active(name)


def _python_without_api_url(script: str, arg: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` with ``arg`` in a fresh interpreter from the repository root, with no
    PREFECT_API_* in its environment (Prefect's import-time settings then lack a server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API_")}
    env |= {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
    return subprocess.run(
        [sys.executable, "-c", script, arg],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )


LENDER_IN_A_SETTINGS_CONTEXT = """
import os, sys
from prefect.settings import PREFECT_API_URL, temporary_settings
from flows.device import SlotLender, ensure_device_limit

url = sys.argv[1]  # given after import, as podscribe demo does: Prefect's globals lack it
with temporary_settings(updates={PREFECT_API_URL: url}):
    os.environ["PREFECT_API_URL"] = url
    ensure_device_limit(2, name="lender-context-test")
    lender = SlotLender("lender-context-test")
    with lender.slot():
        from prefect.client.orchestration import get_client
        with get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("lender-context-test")
        print("active", limit.active_slots)
"""


def test_slot_lender_acquires_on_the_callers_server(prefect_api: str) -> None:
    # The helper thread that acquires slots must use the API URL of the caller's settings
    # context, not Prefect's import-time globals (where a bare thread would start an
    # ephemeral server of its own and hold its slots there).
    done = _python_without_api_url(LENDER_IN_A_SETTINGS_CONTEXT, prefect_api)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "active 1" in done.stdout, done.stdout + done.stderr[-2000:]
    assert "temporary server" not in done.stderr


FLOW_ON_A_LOCAL_SERVER = """
import socket, sys
from pathlib import Path
from prefect import flow, get_run_logger
from flows.server import local_server

@flow
def greet() -> None:
    get_run_logger().info("hello from a flow on a server about to stop")

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
with local_server(port=port, home=Path(sys.argv[1])):
    greet()
print("done")
"""


def test_local_server_gets_the_queued_logs_before_it_stops(tmp_path: Path) -> None:
    # `podscribe demo` ran a flow on a server it started, stopped the server, and Prefect
    # printed "Error logging to API" at exit: the run's last logs were still queued.
    done = _python_without_api_url(FLOW_ON_A_LOCAL_SERVER, str(tmp_path))
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "done" in done.stdout, output[-3000:]
    assert "Error logging to API" not in output, output[-3000:]
    assert "temporary server" not in output, output[-3000:]


def test_slot_lender_takes_one_acquisition_for_users_waiting_together(prefect_api: str) -> None:
    import threading

    from flows.device import SlotLender, ensure_device_limit

    name = "lender-bulk-test"
    ensure_device_limit(16, name=name)
    lender = SlotLender(name)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def user() -> None:
        with lender.slot():
            entered.release()
            release.wait(timeout=60)

    first = threading.Thread(target=user)
    first.start()
    assert entered.acquire(timeout=60)
    assert lender.acquisitions == 1 and lender.held == 1
    # 12 users arrive while one holds its slot: one more acquisition takes what they need.
    others = [threading.Thread(target=user) for _ in range(12)]
    for t in others:
        t.start()
    for _ in others:
        assert entered.acquire(timeout=60)
    assert lender.held == 13 and lender.acquisitions <= 3
    assert _active_slots(name) == 13
    release.set()
    for t in [first, *others]:
        t.join(timeout=60)
    assert lender.held == 0


def test_slot_lender_reservation_acquires_ahead_and_gives_back_unused_slots(
    prefect_api: str,
) -> None:
    from flows.device import SlotLender, ensure_device_limit

    name = "lender-reserve-test"
    ensure_device_limit(4, name=name)
    lender = SlotLender(name)
    with lender.reserve(6) as reservation:
        assert reservation.wait(30)
        assert lender.held == 4 == _active_slots(name)  # capped by the limit, before any user
        with lender.slot(), lender.slot():
            assert lender.acquisitions == 1 and reservation.remaining == 4
            reservation.cancel(4)  # e.g. their results were cached
            assert lender.held == 4  # the group is still in use
        assert lender.held == 0
    with lender.reserve(2):
        pass  # closed before use: nothing stays held
    assert lender.held == 0
    assert _wait_for_no_active(name)


def _wait_for_no_active(name: str) -> bool:
    import time

    deadline = time.monotonic() + 10
    while _active_slots(name) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _active_slots(name) == 0


def test_transcribe_episode_diarizes_in_a_task_of_its_own(
    flow_env: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two espeak-ng voices: the diarize task runs beside the chunk tasks, its result is
    persisted with theirs (what a Retry reads), and every segment gets a named speaker."""
    import json

    import flows.episode
    from flows.episode import transcribe_episode

    monkeypatch.setattr(flows.episode, "RESERVE_WAIT_S", 120.0)
    summary = transcribe_episode(
        source=str(fixtures_dir / "dialogue.mp3"),
        episode_id="dialogue",
        reference=str(fixtures_dir / "dialogue.txt"),
        max_chunk_s=15.0,
        speakers="auto",
    )
    out = flow_env / "transcripts_root" / "dialogue"
    transcript = json.loads((out / "transcript.json").read_text())
    assert {s["speaker"] for s in transcript["segments"]} == {"Host", "Guest"}
    assert transcript["provenance"]["diarization"]["speakers"] == 2
    assert (out / "speakers.rttm").exists() and (out / "diarization.json").exists()
    # persisted: one result per chunk task and one for the diarize task, nothing else
    results = [p for p in (flow_env / "results_dir").rglob("*") if p.is_file()]
    assert len(results) == summary["chunks"] + 1
    # a bad value is refused by the flow before any work
    state = transcribe_episode(
        source=str(fixtures_dir / "dialogue.mp3"), episode_id="bad", speakers="0",
        return_state=True,
    )  # fmt: skip
    assert state.is_failed() and "--speakers must be off, auto" in (state.message or "")
    assert not (flow_env / "audio_root" / "bad").exists()


def test_transcribe_episode_names_speakers_after_the_persons_given(
    flow_env: Path, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The persons parameter (what a poll passes from the feed's <podcast:person> tags) names
    the diarized speakers from what they say; a nameless person fails before any work."""
    import json

    import flows.episode
    from flows.episode import transcribe_episode

    monkeypatch.setattr(flows.episode, "RESERVE_WAIT_S", 120.0)
    transcribe_episode(
        source=str(fixtures_dir / "intro.mp3"),
        episode_id="intro",
        speakers="2",
        persons=["Alice Smith:host", "Bob Jones:guest"],
    )
    transcript = json.loads(
        (flow_env / "transcripts_root" / "intro" / "transcript.json").read_text()
    )
    assert {s["speaker"] for s in transcript["segments"]} == {"Alice Smith", "Bob Jones"}
    assert transcript["provenance"]["diarization"]["naming"]["by"] == "feed"
    state = transcribe_episode(
        source=str(fixtures_dir / "intro.mp3"), episode_id="bad", speakers="2",
        persons=[":host"], return_state=True,
    )  # fmt: skip
    assert state.is_failed() and "give a name of 1 to 200 characters" in (state.message or "")
    assert not (flow_env / "audio_root" / "bad").exists()
