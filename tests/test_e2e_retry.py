"""The Prefect UI's Retry on a failed transcribe-episode run re-runs only the failed chunks.

A real Prefect server (`prefect server start`, fresh SQLite: the test harness's ephemeral
server has no UI) and `podscribe serve` in a subprocess; two chunk
WAVs are corrupted after the run has cut them (the test holds the only slot of the device
limit until then, so no chunk starts early), their sha256 checks fail and the run is Failed.
The chunks are restored, headless Chromium clicks ⋮ → Retry → Retry, and the run must
complete having transcribed each chunk exactly once over both attempts.

The second test runs a two-voice episode with speakers="auto": the decoded WAV is damaged
after cutting (the test also holds the only slot of the diarize limit), so the diarize task
fails its sha256 check while every chunk is transcribed; the WAV is restored, Retry re-runs
the diarize task alone (the chunks come from their persisted results) and the transcript has
its speakers.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import pytest
from conftest import CHROMIUM, CHROMIUM_FLAGS, serve_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
EPISODE = "e2e-episode"
CORRUPT = (0, 2)
LOG_LINE = re.compile(rf"transcribing chunk (\d+) of {EPISODE}")


@pytest.fixture
def prefect_ui_server(tmp_path: Path) -> Iterator[str]:
    """A real Prefect server with its UI on a free port; yields its API URL."""
    from flows.server import local_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with local_server(port=port, home=tmp_path / "prefect-home") as api_url:
        yield api_url


@pytest.fixture
def served(prefect_ui_server: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    """`podscribe serve` against that server, writing under tmp_path."""
    prefect_api = prefect_ui_server
    env = serve_env(prefect_api, tmp_path)
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--poll-every", "0"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield env | {"log": str(log)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _wait(what: str, check, timeout_s: float, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _deployment_id(client, name: str):
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name).id
    except ObjectNotFound:
        return None


def _final_state(client, run_id):
    state = client.read_flow_run(run_id).state
    return state if state is not None and state.is_final() else None


def _transcribed(client, run_id, line: re.Pattern[str] = LOG_LINE) -> Counter[int]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    logs = client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200
    )
    return Counter(int(m.group(1)) for log in logs if (m := line.search(log.message)))


def _task_states(client, run_id, prefix: str) -> list[str]:
    """The state names of the run's task runs whose names start with ``prefix``, sorted
    (a Retry adds task-run records; the earlier attempt's stay)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    runs = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=200
    )
    return sorted(r.state.name for r in runs if r.name.startswith(prefix) and r.state)


@contextmanager
def _limits_of_one(client, *names: str) -> Iterator[None]:
    """Set the global concurrency limits ``names`` (created by serve) to one slot each;
    their slot counts as they were afterwards."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    old = {n: client.read_global_concurrency_limit_by_name(n).limit for n in names}
    for name in names:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1))
    try:
        yield
    finally:
        for name, limit in old.items():
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=limit))


def _local_only(route) -> None:
    host = urlparse(route.request.url).hostname
    if host in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


def _click_retry(ui: str, run_id, shots: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.route("**/*", _local_only)
        page = context.new_page()
        try:
            page.goto(f"{ui}/v2/runs/flow-run/{run_id}", wait_until="domcontentloaded")
            page.get_by_text("Failed").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Open menu").first.click(timeout=30_000)
            page.get_by_role("menuitem", name="Retry").click(timeout=30_000)
            title = page.get_by_text("Retry Flow Run", exact=True)
            title.wait_for(timeout=30_000)
            # The confirmation dialog's own Retry button (an alertdialog, opened last).
            page.get_by_role("button", name="Retry", exact=True).last.click(timeout=30_000)
            title.wait_for(state="hidden", timeout=30_000)
        except Exception:
            page.screenshot(path=str(shots / "retry-failure.png"), full_page=True)
            raise
        finally:
            browser.close()


def _retry_to_completion(api: str, client, run_id, serve_log: str, shots: Path) -> None:
    """Retry the failed run from its page in the UI; it must leave Failed and complete."""
    _click_retry(api.removesuffix("/api"), run_id, shots)
    _wait(
        "the retried run to leave Failed",
        lambda: not client.read_flow_run(run_id).state.is_failed(),
        60,
    )
    done = _wait("the retried run", lambda: _final_state(client, run_id), 300)
    assert done.is_completed(), (done, Path(serve_log).read_text()[-3000:])


def test_ui_retry_reruns_only_the_failed_chunks(
    served: dict[str, str], prefect_ui_server: str, fixtures_dir: Path, tmp_path: Path
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.concurrency.sync import concurrency
    from prefect.deployments import run_deployment

    from flows.device import ensure_device_limit
    from flows.settings import DEVICE_LIMIT

    ensure_device_limit(1)
    with get_client(sync_client=True) as client, _limits_of_one(client, DEVICE_LIMIT):
        _wait(
            "the served deployment",
            lambda: _deployment_id(client, "transcribe-episode/transcribe-episode"),
            120,
        )
        chunks_dir = tmp_path / "audio" / EPISODE / "chunks"
        with concurrency(DEVICE_LIMIT, occupy=1):  # no chunk starts before the damage
            run = run_deployment(
                "transcribe-episode/transcribe-episode",
                timeout=0,
                parameters={
                    "source": str(fixtures_dir / "episode.mp3"),
                    "episode_id": EPISODE,
                    "title": "E2E episode",
                    "reference": str(fixtures_dir / "episode.txt"),
                    "max_chunk_s": 15.0,
                },
            )
            _wait(
                "the chunk manifest",
                lambda: (chunks_dir.parent / "manifest.json").is_file(),
                180,
            )
            originals = {i: (chunks_dir / f"chunk-{i:04d}.wav").read_bytes() for i in CORRUPT}
            for i, data in originals.items():
                (chunks_dir / f"chunk-{i:04d}.wav").write_bytes(data[:100] + bytes(len(data) - 100))
        total = len(list(chunks_dir.glob("chunk-*.wav")))
        assert total >= 3
        failed = _wait("the run to fail", lambda: _final_state(client, run.id), 300)
        assert failed.is_failed(), failed
        first = _wait(
            "the first attempt's logs",
            lambda: c if sum((c := _transcribed(client, run.id)).values()) == total - 2 else None,
            30,
        )
        # the log counts chunks from 1, as the task names do
        assert set(first) == {i + 1 for i in range(total)} - {i + 1 for i in CORRUPT}

        for i, data in originals.items():
            (chunks_dir / f"chunk-{i:04d}.wav").write_bytes(data)
        _retry_to_completion(prefect_ui_server, client, run.id, served["log"], tmp_path)
        counts = _wait(
            "the retry's logs",
            lambda: c if sum((c := _transcribed(client, run.id)).values()) >= total else None,
            30,
        )
        assert counts == Counter(range(1, total + 1)), "each chunk transcribed exactly once"
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[f"quality-{EPISODE}"]))
        )
        assert artifacts and "Worst chunks" in str(artifacts[0].data)


DIALOGUE = "e2e-dialogue"
DIALOGUE_LINE = re.compile(rf"transcribing chunk (\d+) of {DIALOGUE}")


def test_ui_retry_reruns_only_a_failed_diarization(
    served: dict[str, str], prefect_ui_server: str, fixtures_dir: Path, tmp_path: Path
) -> None:
    import json

    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.deployments import run_deployment

    from flows.settings import DEVICE_LIMIT, DIARIZE_LIMIT

    with get_client(sync_client=True) as client:
        _wait(
            "the served deployment",
            lambda: _deployment_id(client, "transcribe-episode/transcribe-episode"),
            120,
        )
        with _limits_of_one(client, DEVICE_LIMIT, DIARIZE_LIMIT):
            episode_dir = tmp_path / "audio" / DIALOGUE
            # Neither a chunk nor the diarization starts before the damage.
            with concurrency([DEVICE_LIMIT, DIARIZE_LIMIT], occupy=1):
                run = run_deployment(
                    "transcribe-episode/transcribe-episode",
                    timeout=0,
                    parameters={
                        "source": str(fixtures_dir / "dialogue.mp3"),
                        "episode_id": DIALOGUE,
                        "title": "E2E dialogue",
                        "reference": str(fixtures_dir / "dialogue.txt"),
                        "max_chunk_s": 15.0,
                        "speakers": "auto",
                    },
                )
                _wait("the chunk manifest", lambda: (episode_dir / "manifest.json").is_file(), 180)
                manifest = json.loads((episode_dir / "manifest.json").read_text())
                wav = Path(manifest["audio"]["path"])
                wav = wav if wav.is_absolute() else ROOT / wav
                original = wav.read_bytes()
                wav.write_bytes(original[:100] + bytes(len(original) - 100))  # same size
            total = len(manifest["chunks"])
            assert total >= 2
            failed = _wait("the run to fail", lambda: _final_state(client, run.id), 300)
            assert failed.is_failed(), failed
            assert "diarization failed" in failed.message and str(wav) in failed.message
            assert "Retry" in failed.message
            first = _wait(
                "the first attempt's logs",
                lambda: (
                    c
                    if sum((c := _transcribed(client, run.id, DIALOGUE_LINE)).values()) == total
                    else None
                ),
                30,
            )
            assert set(first) == set(range(1, total + 1)), "every chunk done in the first attempt"
            assert _task_states(client, run.id, "diarize") == ["Failed"]

            wav.write_bytes(original)
            _retry_to_completion(prefect_ui_server, client, run.id, served["log"], tmp_path)
            # The diarize task ran twice (failed, then completed: not Cached), each chunk was
            # transcribed once over both attempts (the retry took them from their results).
            states = _wait(
                "the diarize task runs",
                lambda: s if len(s := _task_states(client, run.id, "diarize")) == 2 else None,
                30,
            )
            assert states == ["Completed", "Failed"]
            assert _transcribed(client, run.id, DIALOGUE_LINE) == Counter(range(1, total + 1))
            transcript = json.loads(
                (tmp_path / "transcripts" / DIALOGUE / "transcript.json").read_text()
            )
            assert {s["speaker"] for s in transcript["segments"]} == {"Host", "Guest"}
            assert transcript["provenance"]["diarization"]["speakers"] == 2
