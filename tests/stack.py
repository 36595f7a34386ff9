"""The production stack's processes for tests: a Prefect server on PostgreSQL, and the
environment each process of the stack gets.

``server_settings`` and ``podscribe_settings`` are the settings docker-compose.yml gives its
prefect-server and podscribe services (test_compose.py checks that the file sets exactly these
names, with values of the same shape); everything else a test sets is in ``TEST_ONLY`` or
named where it is set, with the reason.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import httpx

from pipeline.sources import catalog

ROOT = Path(__file__).resolve().parent.parent
PODSCRIBE = Path(sys.executable).with_name("podscribe")  # the installed command (setup.sh)
SERVER_START_S = 180  # a fresh server migrates Prefect's schema into PostgreSQL first
OFFLINE = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
# What tests add to the stack's settings, and why; docker-compose.yml has none of these.
TEST_ONLY = {
    # Served deployments and workers pick up runs within ~2 s (default ~10 s).
    "PREFECT_RUNNER_POLL_FREQUENCY": "2",
    "PREFECT_WORKER_QUERY_SECONDS": "2",
    # The test feeds are on 127.0.0.1, which podscribe refuses to fetch from by default.
    "PODSCRIBE_ALLOW_PRIVATE_NETWORKS": "true",
}

T = TypeVar("T")


def asyncpg_url(database: str) -> str:
    """A postgresql:// URL as Prefect's server wants it (the asyncpg driver comes with it)."""
    return database.replace("postgresql://", "postgresql+asyncpg://", 1)


def server_settings(database: str) -> dict[str, str]:
    """The Prefect server's settings: its database on PostgreSQL, analytics off."""
    return {"PREFECT_API_DATABASE_CONNECTION_URL": asyncpg_url(database), **OFFLINE}


def podscribe_settings(
    api: str, catalog: str, audio: Path, transcripts: Path, results: Path
) -> dict[str, str]:
    """The settings of a process that runs podscribe's flows (`podscribe serve`, a worker):
    the Prefect server, the PostgreSQL catalog, where audio, outputs and results go."""
    return {
        "PREFECT_API_URL": api,
        "PODSCRIBE_DB": catalog,
        "PODSCRIBE_AUDIO_ROOT": str(audio),
        "PODSCRIBE_TRANSCRIPTS_ROOT": str(transcripts),
        "PODSCRIBE_RESULTS_DIR": str(results),
        "PODSCRIBE_DEVICE_SLOTS": "16",
        **OFFLINE,
    }


def child_env(settings: dict[str, str], **extra: str) -> dict[str, str]:
    """This process's environment with ``settings``, ``TEST_ONLY`` and ``extra`` on top, and
    this checkout first on the import path (the shared virtualenv may hold another one)."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env = os.environ | settings | TEST_ONLY | {"PYTHONPATH": path} | extra
    if "PREFECT_API_URL" not in settings:
        env.pop("PREFECT_API_URL", None)
    return env


def run_ok(args: list[str], env: dict[str, str], cwd: Path, timeout_s: float = 180) -> str:
    """Run a command to completion; its stdout, or a failure with its output."""
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout_s)
    assert done.returncode == 0, f"{args}: {done.stdout[-2000:]} {done.stderr[-2000:]}"
    return done.stdout


def final_episodes(db: str, n: int) -> list[catalog.EpisodeRow] | None:
    """The catalog's episodes once there are ``n`` and none is new or running, else None."""
    rows = catalog.list_episodes(db)
    if len(rows) == n and all(r.state in ("done", "failed") for r in rows):
        return rows
    return None


TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def flow_runs_settled(database: str, n: int) -> bool:
    """Whether the Prefect server (its PostgreSQL ``database``) has ``n`` flow runs, all in a
    final state. An episode is done in the catalog just before its flow run ends: a worker or
    `serve` stopped in between would cancel the run it is finishing."""
    import psycopg

    with psycopg.connect(database) as conn:
        states = [r[0] for r in conn.execute("SELECT state_type FROM flow_run").fetchall()]
    return len(states) == n and all(s in TERMINAL_STATES for s in states)


def flow_processes_exited(pid: int) -> bool:
    """Whether the runner process ``pid`` (`podscribe serve`, a worker) has no flow-run
    process left. A run's state is final on the server a moment before its process exits;
    a runner stopped in between marks the run it still holds CANCELLED."""
    import psutil

    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return True
    for child in children:
        try:
            if "prefect.engine" in " ".join(child.cmdline()):
                return False
        except psutil.Error:  # gone while we looked
            continue
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout_s: float, every_s: float = 1.0) -> T:
    """Call ``check`` until it returns something other than None (or False); fail after
    ``timeout_s`` naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = check()
        if found is not None and found is not False:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout_s:.0f} s")
        time.sleep(every_s)


@dataclass(frozen=True)
class PrefectServer:
    api: str  # PREFECT_API_URL
    database: str  # the PostgreSQL database it keeps its state in (postgresql:// URL)


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    """Terminate ``proc`` (then kill it if it does not exit)."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


@contextlib.contextmanager
def prefect_server(database: str, work: Path) -> Iterator[PrefectServer]:
    """`prefect server start` on 127.0.0.1 with its state in ``database``, until the block ends."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    # Its own PREFECT_HOME (profiles, logs); the UI is not needed by these tests.
    env = child_env(
        server_settings(database), PREFECT_HOME=str(work / "home"), PREFECT_UI_ENABLED="false"
    )
    log_path = work / "prefect-server.log"
    api = f"http://127.0.0.1:{port}/api"
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
            + ["--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for(
            f"prefect server at {api} (log {log_path})",
            lambda: _healthy(api, server, log_path),
            SERVER_START_S,
        )
        yield PrefectServer(api, database)
    finally:
        stop(server)


def _healthy(api: str, server: subprocess.Popen[bytes], log: Path) -> bool:
    if server.poll() is not None:
        raise RuntimeError(f"prefect server exited: {log.read_text()[-3000:]}")
    try:
        return httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False
