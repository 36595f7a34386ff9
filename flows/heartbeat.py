"""Flow-run heartbeats that stop when the run ends, not up to a second later.

Prefect 3.9 sends a heartbeat event for every flow run every 180 s (PREFECT_FLOWS_HEARTBEAT_
FREQUENCY; with a "zombie flow" automation they mark crashed runs). Its heartbeat thread sleeps
in 1 s steps and checks a stop event between them, and a sync flow run joins that thread when
its body returns (``prefect.flow_engine._send_heartbeats``, PrefectHQ/prefect#19641): every
episode run and every polled feed's subflow waited 0-1 s (0.5 s on average) for nothing at its
end — the largest single piece of Prefect's overhead on an episode (BENCHMARKS.md).

``install()`` swaps in the same context manager with one change: the thread waits on the stop
event itself (``Event.wait(interval)``), so it wakes and exits as soon as the run ends. Heartbeats
keep their interval, content and error handling. It is applied only to the Prefect release it
was written against (pyproject pins it); on any other release Prefect's own is left in place.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Generator
from typing import Any

import prefect
import prefect.flow_engine as flow_engine

# The Prefect release whose _send_heartbeats this replaces (checked against its source).
PREFECT_VERSION = "3.9.1"


@contextlib.contextmanager
def send_heartbeats(engine: Any, join_on_exit: bool = True) -> Generator[None, None, None]:
    """``prefect.flow_engine._send_heartbeats`` whose thread waits on its stop event."""
    heartbeat_seconds = engine.heartbeat_seconds
    if heartbeat_seconds is None:
        yield
        return
    heartbeat_seconds = max(heartbeat_seconds, flow_engine.MINIMUM_HEARTBEAT_INTERVAL)
    resource, related = engine._build_heartbeat_event_template()
    stop_event = threading.Event()

    def heartbeat_loop() -> None:
        while not stop_event.is_set():
            state = engine.flow_run.state if engine.flow_run else None
            if state and state.is_final():
                engine.logger.debug("Flow run in terminal state, stopping heartbeat")
                return
            try:
                engine._emit_flow_run_heartbeat(resource, related)
            except Exception:
                engine.logger.debug("Failed to emit heartbeat", exc_info=True)
            stop_event.wait(heartbeat_seconds)  # returns at once when the run ends

    # As Prefect does: the thread sees the caller's settings context (its API URL).
    context = contextvars.copy_context()
    thread = threading.Thread(target=context.run, args=(heartbeat_loop,), daemon=True,
                              name="prefect-flow-heartbeat")
    thread.start()
    engine.logger.debug("Started flow run heartbeat context")
    try:
        yield
    finally:
        stop_event.set()
        if join_on_exit:
            thread.join(timeout=2)
        engine.logger.debug("Stopped flow run heartbeat context")


def install() -> bool:
    """Use ``send_heartbeats`` for flow runs in this process; False on another Prefect release."""
    if prefect.__version__ != PREFECT_VERSION or not hasattr(flow_engine, "_send_heartbeats"):
        return False
    flow_engine._send_heartbeats = send_heartbeats  # type: ignore[assignment]
    return True
