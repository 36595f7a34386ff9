"""The Prefect UI as the operator's console, driven in headless Chromium.

One real Prefect server (with its UI), one `podscribe serve` subprocess (episode runs capped
at 1) and one browser serve the whole module; the tests run in order on the same data:

1. the run forms show titles, descriptions and the model/device choices;
2. a poll of the demo feed (real speech) creates one run per episode, named by its title
   before it starts, and the runs queue one at a time;
3. a completed run's state message holds its WER (UI: Details → State Message);
4. a chunk that fails is named by the number of its task, and re-run by that number;
5. an unknown model fails before anything is downloaded, with one log line, no traceback;
6. Ctrl-C on serve leaves the deployments' schedules as they were.

Screenshots of the forms and of a completed run go to docs/ (they are the README's).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from conftest import CHROMIUM, CHROMIUM_FLAGS, LocalHTTPServer, Reply, serve_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SHOTS = Path(tempfile.gettempdir()) / "podscribe-e2e-screenshots"
TRANSCRIBE = "transcribe-episode/transcribe-episode"
RERUN = "rerun-chunks/rerun-chunks"
POLL = "poll-feeds/poll-feeds"
WER_MESSAGE = re.compile(r"^WER \d+\.\d% · \d+ chunks? · \d+ flagged, \d+ repaired$")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(what: str, check: Any, timeout_s: float, every_s: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("console")


@pytest.fixture(scope="module")
def api(work: Path) -> Iterator[str]:
    """A real Prefect server with its UI on a free port; yields its API URL."""
    from flows.server import local_server

    with local_server(port=_free_port(), home=work / "prefect-home") as api_url:
        yield api_url


@pytest.fixture(scope="module")
def served(api: str, work: Path) -> Iterator[dict[str, Any]]:
    """`podscribe serve` against that server, one episode run at a time, a yearly poll."""
    env = serve_env(api, work, PODSCRIBE_EPISODE_RUNS="1")
    log = work / "serve.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "serve", "--poll-cron", "0 0 1 1 *"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for name in (TRANSCRIBE, RERUN, POLL):
            _wait(f"the {name} deployment", lambda n=name: _deployment(client, n), 180)
    try:
        yield {"proc": proc, "log": log, "ui": api.removesuffix("/api"), "work": work}
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _deployment(client: Any, name: str) -> Any:
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def _local_only(route: Any) -> None:
    host = urlparse(route.request.url).hostname
    if host in ("127.0.0.1", "localhost"):
        route.continue_()
    else:
        route.abort()


@pytest.fixture(scope="module")
def page(served: dict[str, Any]) -> Iterator[Any]:
    """One headless Chromium page for the module (only local requests go out)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.route("**/*", _local_only)
        try:
            yield context.new_page()
        finally:
            browser.close()


def _shot(page: Any, name: str) -> Path:
    """A screenshot of what the test sees: into docs/ (README's pictures) when
    PODSCRIBE_SCREENSHOTS=docs, else into a temporary folder, so a test run leaves the
    checkout as it was."""
    folder = DOCS if os.environ.get("PODSCRIBE_SCREENSHOTS") == "docs" else SHOTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000  # a page was drawn, not an empty frame
    return path


def _run_deployment(name: str, parameters: dict[str, Any], timeout: float = 0) -> Any:
    """Create a run of a deployment. Prefect's run_deployment returns a coroutine when an
    event loop runs in this thread (Playwright's sync API keeps one): force its sync path."""
    from prefect.deployments import run_deployment

    return run_deployment(name, parameters=parameters, timeout=timeout, _sync=True)  # type: ignore[call-arg]


def _final(client: Any, run_id: Any) -> Any:
    state = client.read_flow_run(run_id).state
    return state if state is not None and state.is_final() else None


def _logs(client: Any, run_id: Any) -> list[Any]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])), limit=200
    )


def _settled_logs(client: Any, run_id: Any) -> list[Any]:
    """The run's logs once its error line has arrived (logs reach the API after the state),
    read again a little later so that a second error line would be there too."""
    _wait("an error log", lambda: [x for x in _logs(client, run_id) if x.level >= 40], 60)
    time.sleep(3.0)
    return _logs(client, run_id)


def _episode_runs(client: Any) -> list[Any]:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["transcribe-episode"]))
    )


def _choices(page: Any, current: str) -> list[str]:
    """The options of the select that shows ``current`` (opened, read, closed)."""
    try:
        page.locator(f'button.p-select-button__control[modelvalue="{current}"]').click(
            timeout=10_000
        )
        options = page.get_by_role("option")
        try:
            options.first.wait_for(timeout=3_000)
        except Exception:  # noqa: BLE001 - the select opens from the keyboard as well
            page.keyboard.press("ArrowDown")
            options.first.wait_for(timeout=10_000)
        return [t.strip() for t in options.all_inner_texts() if t.strip()]
    finally:
        page.keyboard.press("Escape")


# --- 1. forms -------------------------------------------------------------------------------------


def test_run_forms_show_descriptions_and_choices(served: dict[str, Any], page: Any) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        transcribe, rerun = _deployment(client, TRANSCRIBE), _deployment(client, RERUN)
    page.goto(f"{served['ui']}/deployments/deployment/{transcribe.id}/run")
    page.get_by_text("Episode audio", exact=True).wait_for(timeout=60_000)
    for text in (
        "The episode's audio: an http(s) URL or a file path",
        "Reference transcript (Optional)",
        "Whisper model (Optional)",
        "On this machine now: tiny.en",
        "Device (Optional)",
        "Where Whisper runs: auto",
        "Longest chunk (s) (Optional)",
    ):
        assert page.get_by_text(text).first.is_visible(), text
    # The model and device fields are selects: their options are the choices.
    page.get_by_text("Whisper model (Optional)").scroll_into_view_if_needed()
    _shot(page, "ui-run-form.png")
    assert _choices(page, "tiny.en")[:2] == ["tiny.en", "base"]  # this machine's first
    assert {"small.en", "large-v3"} <= set(_choices(page, "tiny.en"))
    assert _choices(page, "auto") == ["auto", "cpu", "cuda"]

    page.goto(f"{served['ui']}/deployments/deployment/{rerun.id}/run")
    page.get_by_text("Chunks", exact=True).wait_for(timeout=60_000)
    assert page.get_by_text("by the numbers the task names show").first.is_visible()
    assert page.get_by_text("its title, as its run name shows it").first.is_visible()
    _shot(page, "ui-rerun-form.png")


# --- 2. names from the start, runs queue ----------------------------------------------------------


@pytest.fixture(scope="module")
def polled(served: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The demo feed (real speech) polled once through the poll-feeds deployment; yields the
    episode runs as they were when the poll finished, and their final states."""
    from prefect.client.orchestration import get_client

    from pipeline.demo import DEMO_TITLES, serve_demo_feed

    with serve_demo_feed(port=0) as feed_url, get_client(sync_client=True) as client:
        poll = _run_deployment(POLL, parameters={"feeds": [feed_url]}, timeout=0)
        done = _wait("the poll", lambda: _final(client, poll.id), 300)
        assert done.is_completed(), done
        at_poll_end = _episode_runs(client)
        most_running = 0
        while True:  # each episode run in turn: never two at once
            runs = _episode_runs(client)
            most_running = max(most_running, sum(r.state_name == "Running" for r in runs))
            if len(runs) == len(DEMO_TITLES) and all(r.state.is_final() for r in runs):
                break
            time.sleep(1.0)
        yield {"at_poll_end": at_poll_end, "final": runs, "most_running": most_running}


def test_poll_names_episode_runs_by_title_before_they_start(polled: dict[str, Any]) -> None:
    from pipeline.demo import DEMO_TITLES

    at_end = polled["at_poll_end"]
    assert sorted(r.name for r in at_end) == sorted(f"transcribe {t}" for t in DEMO_TITLES)
    waiting = [r for r in at_end if r.start_time is None]
    # one episode run at a time (PODSCRIBE_EPISODE_RUNS=1): the others waited, named already
    assert len(waiting) >= len(DEMO_TITLES) - 1, [(r.name, r.state_name) for r in at_end]
    not_started = {"Scheduled", "AwaitingConcurrencySlot", "Pending", "Submitting"}
    assert {r.state_name for r in waiting} <= not_started
    assert polled["most_running"] == 1


# --- 3. outcomes ----------------------------------------------------------------------------------


def test_completed_run_shows_its_wer(
    polled: dict[str, Any], served: dict[str, Any], page: Any
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    runs = {r.name: r for r in polled["final"]}
    for run in runs.values():
        assert run.state.is_completed() and WER_MESSAGE.match(run.state.message), run.state
    # real speech: Whisper tiny.en gets most words right (the espeak demo had 36%)
    wers = [float(r.state.message.split("%")[0].removeprefix("WER ")) for r in runs.values()]
    assert max(wers) < 20.0, wers
    jfk = runs["transcribe Ask not: John F. Kennedy, 1961"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[jfk.id]))
        )
    keys = {a.key.split("-")[0]: a for a in artifacts if a.key}
    assert set(keys) == {"quality", "chunks", "progress"}
    assert jfk.state.message in keys["quality"].description
    assert "report.html" in str(keys["quality"].data)

    page.goto(f"{served['ui']}/runs/flow-run/{jfk.id}")
    page.get_by_text(jfk.name).first.wait_for(timeout=60_000)
    page.get_by_text("chunk 1/1 · Ask not").first.wait_for(timeout=60_000)
    _shot(page, "ui-completed-run.png")
    page.goto(f"{served['ui']}/runs/flow-run/{jfk.id}?tab=Details")
    page.get_by_text("State Message").wait_for(timeout=60_000)
    assert page.get_by_text(jfk.state.message).first.is_visible()
    _shot(page, "ui-completed-run-details.png")


# --- 4. a failed chunk, re-run by the number the UI shows -----------------------------------------


def test_failed_chunk_is_rerun_by_the_number_the_ui_shows(
    polled: dict[str, Any], served: dict[str, Any], page: Any
) -> None:
    from prefect.client.orchestration import get_client

    from pipeline.audio.chunk import MANIFEST_NAME, load_manifest

    title = "The art of printing (LJ Speech)"
    (run,) = [r for r in polled["final"] if r.name == f"transcribe {title}"]
    episode_id = run.parameters["episode_id"]
    manifest = load_manifest(served["work"] / "audio" / episode_id / MANIFEST_NAME)
    total = len(manifest.chunks)
    assert total >= 2
    last = manifest.chunks[-1].path
    original = last.read_bytes()
    last.write_bytes(original[:100] + bytes(len(original) - 100))  # damaged after the cut
    with get_client(sync_client=True) as client:
        try:
            failing = _run_deployment(
                RERUN, parameters={"episode": title, "chunk_numbers": [total]}, timeout=0
            )
            failed = _wait("the rerun to fail", lambda: _final(client, failing.id), 300)
        finally:
            last.write_bytes(original)
        assert failed.is_failed(), failed
        # The run's name carries the title although the episode was given by title only.
        assert client.read_flow_run(failing.id).name == f"rerun chunks {total} of {title}"

        page.goto(f"{served['ui']}/runs/flow-run/{failing.id}")
        task = page.get_by_text(re.compile(rf"chunk \d+/{total} · {re.escape(title)}")).first
        task.wait_for(timeout=60_000)
        shown = int(re.search(r"chunk (\d+)/", task.inner_text()).group(1))
        assert shown == total
        # the run's one line names the chunk by the same number
        assert f"first chunk {shown}: chunk {shown} of {episode_id} changed" in failed.message
        logs = _settled_logs(client, failing.id)
        # logged once by the run, one line; besides it only Prefect's own one-line
        # "Finished in state Failed('chunk n of …')" of the failed task, no traceback
        ours = [log.message for log in logs if log.level >= 40]
        assert [m for m in ours if not m.startswith("Finished in state")] == [failed.message]
        assert len(ours) == 2, ours
        assert not any("Traceback" in log.message for log in logs)

        again = _run_deployment(
            RERUN, parameters={"episode": title, "chunk_numbers": [shown]}, timeout=0
        )
        done = _wait("the rerun", lambda: _final(client, again.id), 300)
        assert done.is_completed() and WER_MESSAGE.match(done.message), done
        # only that chunk's task ran: transcribed, or (same audio, model and options) taken
        # from the chunk store, where the first run left it
        chunk_lines = _wait(
            "the chunk's log line",
            lambda: [
                log.message
                for log in _logs(client, again.id)
                if re.match(r"(transcribing )?chunk \d+ of ", log.message)
            ],
            30,
        )
        assert chunk_lines in (
            [f"transcribing chunk {shown} of {episode_id}"],
            [f"chunk {shown} of {episode_id} reused from the store"],
        ), chunk_lines


# --- 5. fail early, once --------------------------------------------------------------------------


def test_unknown_model_fails_before_any_download_with_one_line(
    served: dict[str, Any], page: Any, http_server: LocalHTTPServer
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from pipeline.demo import DEMO_DIR

    audio = http_server.route(
        "/ep.mp3", Reply((DEMO_DIR / "episode-1.mp3").read_bytes(), content_type="audio/mpeg")
    )
    with get_client(sync_client=True) as client:
        run = _run_deployment(
            TRANSCRIBE,
            parameters={"source": audio, "model": "no-such-model", "title": "Bad model"},
            timeout=0,
        )
        state = _wait("the run to fail", lambda: _final(client, run.id), 300)
        assert state.is_failed() and state.message.startswith("unknown model 'no-such-model'")
        assert http_server.hits["/ep.mp3"] == 0  # nothing downloaded
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id]))
        )
        assert tasks == []  # no prepare, no chunk task started
        logs = _settled_logs(client, run.id)
        assert [log.message for log in logs if log.level >= 40] == [state.message]
        assert not any("Traceback" in log.message for log in logs)
    page.goto(f"{served['ui']}/runs/flow-run/{run.id}")
    page.get_by_text(state.message).first.wait_for(timeout=60_000)


# --- 6. Ctrl-C ------------------------------------------------------------------------------------


def test_ctrl_c_on_serve_leaves_the_schedules_as_they_were(served: dict[str, Any]) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        before = _deployment(client, POLL)
        assert before.schedules and not before.paused
        os.killpg(served["proc"].pid, signal.SIGINT)
        served["proc"].wait(timeout=60)
        after = _deployment(client, POLL)
    assert not after.paused, "Ctrl-C paused poll-feeds"
    assert [s.active for s in after.schedules] == [s.active for s in before.schedules]
    assert "export PREFECT_API_URL=" in served["log"].read_text()
