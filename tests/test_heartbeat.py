"""Flow-run heartbeats (flows/heartbeat.py): sent as Prefect sends them, ended with the run."""

from __future__ import annotations

import logging
import threading
import types
from typing import Any

import prefect
import prefect.flow_engine as flow_engine
import pytest

from flows import heartbeat


class _Engine:
    """What the heartbeat context manager reads of a flow run engine."""

    def __init__(self, seconds: int | None) -> None:
        self.heartbeat_seconds = seconds
        self.flow_run = None
        self.logger = logging.getLogger("test-heartbeat")
        self.sent = threading.Event()
        self.count = 0

    def _build_heartbeat_event_template(self) -> tuple[dict, list]:
        return {"prefect.resource.id": "prefect.flow-run.test"}, []

    def _emit_flow_run_heartbeat(self, resource: dict, related: list) -> None:
        self.count += 1
        self.sent.set()


def test_heartbeat_thread_ends_with_the_run_not_after_a_sleep_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prefect's own loop sleeps in time.sleep(1) steps: make any such sleep hang, so only a
    # thread that waits on its stop event can end when the run does.
    hang = threading.Event()
    monkeypatch.setattr(flow_engine, "time", types.SimpleNamespace(sleep=lambda s: hang.wait()))
    engine = _Engine(seconds=30)
    with heartbeat.send_heartbeats(engine):
        assert engine.sent.wait(5), "no heartbeat at the start of the run"
        threads = [t for t in threading.enumerate() if t.name == "prefect-flow-heartbeat"]
        assert len(threads) == 1 and threads[0].is_alive()
    assert not threads[0].is_alive()  # joined: it ended, the join did not time out
    assert engine.count == 1  # the next one was due in 30 s
    hang.set()


def test_no_heartbeat_thread_when_heartbeats_are_off() -> None:
    engine = _Engine(seconds=None)
    before = threading.active_count()
    with heartbeat.send_heartbeats(engine):
        assert threading.active_count() == before
    assert engine.count == 0


def test_flow_runs_use_it_on_the_pinned_prefect(prefect_api: str) -> None:
    import flows.episode  # noqa: F401 - installs it, as every podscribe flow module does

    assert prefect.__version__ == heartbeat.PREFECT_VERSION  # pyproject pins this release
    assert flow_engine._send_heartbeats is heartbeat.send_heartbeats

    seen: dict[str, Any] = {}

    @prefect.flow
    def tiny() -> int:
        seen["threads"] = [t for t in threading.enumerate() if t.name == "prefect-flow-heartbeat"]
        return 1

    assert tiny() == 1
    assert len(seen["threads"]) == 1  # a real flow run sends heartbeats through it
    assert not seen["threads"][0].is_alive()


def test_other_prefect_releases_keep_their_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(flow_engine, "_send_heartbeats", "prefect's")
    monkeypatch.setattr(prefect, "__version__", "3.99.0")
    assert heartbeat.install() is False
    assert flow_engine._send_heartbeats == "prefect's"
