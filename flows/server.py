"""A local Prefect server for `podscribe serve` and `podscribe demo` (SQLite, analytics off)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from pipeline.core.errors import PodscribeError

STARTUP_TIMEOUT_S = 120.0  # a fresh SQLite server needs 10-15 s here, more on a busy machine
OFFLINE_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}


def _healthy(api_url: str) -> bool:
    try:
        return httpx.get(f"{api_url}/health", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def local_server(
    host: str = "127.0.0.1", port: int = 4200, home: Path | None = None
) -> Iterator[str]:
    """Use PREFECT_API_URL when set, else a Prefect server on host:port (started unless one
    already answers there); yield the API URL with Prefect's settings pointed at it.

    ``home``: the started server's PREFECT_HOME (its SQLite database), default Prefect's own.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    given = os.environ.get("PREFECT_API_URL")
    if given:
        yield given
        return
    api_url = f"http://{host}:{port}/api"
    proc = None
    log = Path(tempfile.gettempdir()) / f"podscribe-prefect-server-{port}.log"
    if not _healthy(api_url):
        with open(log, "w") as log_file:  # the child keeps its own copy of the descriptor
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "server",
                    "start",
                    "--host",
                    host,
                    "--port",
                    str(port),
                ],
                env=os.environ
                | OFFLINE_ENV
                | {"PREFECT_UI_API_URL": api_url}
                | ({"PREFECT_HOME": str(home)} if home else {}),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _wait_healthy(api_url, proc, log)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api_url}):
            os.environ["PREFECT_API_URL"] = api_url  # flow-run subprocesses inherit it
            try:
                yield api_url
            finally:
                if proc is not None:
                    _send_queued(api_url)
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def _send_queued(api_url: str) -> None:
    """Send the logs and events this process still has queued for the server about to stop
    (Prefect sends them in the background and would otherwise report "Error logging to
    API" at exit, with those logs lost)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogHandler

    for drain in (APILogHandler().flush, EventsWorker.drain_all):
        try:
            drain()
        except Exception as exc:  # noqa: BLE001 - best effort: the run's results are written
            print(f"could not send queued Prefect logs/events to {api_url}: {exc}", file=sys.stderr)


def _wait_healthy(api_url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PodscribeError(
                f"the Prefect server exited ({proc.returncode}); its log {log} ends:\n"
                + log.read_text(errors="replace")[-2000:]
            )
        if _healthy(api_url):
            return
        time.sleep(0.5)
    proc.terminate()
    raise PodscribeError(
        f"the Prefect server did not answer at {api_url} within "
        f"{STARTUP_TIMEOUT_S:.0f} s; see {log}"
    )


def ui_url(api_url: str) -> str:
    """The UI address that goes with an API URL (the UI is served beside the API)."""
    return api_url.removesuffix("/api")
