"""Two Prefect workers standing for two machines, one Prefect server and one PostgreSQL catalog.

Each worker is a `prefect worker start` process with its own working directory, HOME (so its
own Prefect profile and model cache), temp dir and audio root; the two share nothing but the
Prefect server, the catalog (PODSCRIBE_DB) and the transcripts and results roots, which stand
for a filesystem mounted on every machine (a setting: any root both see). The deployments go
to a process work pool with `podscribe deploy`, two polls of two feeds run at once (usually
one on each worker), and the feeds' episodes are split between the workers, each transcribed once.

What this cannot show: separate hosts (both workers share a kernel, a network namespace and
the checkout's code), a real network filesystem's semantics, or GPUs.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
from conftest import LocalHTTPServer, Reply
from feedgen import Item, rss
from stack import (
    PODSCRIBE,
    PrefectServer,
    child_env,
    final_episodes,
    flow_processes_exited,
    flow_runs_settled,
    podscribe_settings,
    run_ok,
    stop,
    wait_for,
)

from pipeline.sources import catalog

pytestmark = [pytest.mark.multimachine, pytest.mark.slow, pytest.mark.timeout(900)]

POOL = "podscribe-machines"
FEEDS = {
    "Feed A": ["the quick brown fox jumps over the lazy dog", "a stitch in time saves nine"],
    "Feed B": ["every morning the baker opens the shop", "rain is expected over the hills"],
}


@dataclass(frozen=True)
class Machine:
    """What one worker machine has of its own, and the environment it runs with."""

    name: str
    root: Path  # its working directory; HOME, TMPDIR and the audio root are inside

    @property
    def audio(self) -> Path:
        return self.root / "audio"

    def env(self, server: PrefectServer, db: str, shared: Path) -> dict[str, str]:
        for sub in ("home", "tmp", "audio"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        settings = podscribe_settings(
            server.api, db, self.audio, shared / "transcripts", shared / "results"
        )
        home = self.root / "home"
        return child_env(
            settings,
            HOME=str(home),
            PREFECT_HOME=str(home / ".prefect"),
            TMPDIR=str(self.root / "tmp"),
            PODSCRIBE_CACHE_DIR=str(home / ".cache" / "podscribe"),
        )


def _speech(text: str, out: Path) -> bytes:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng not installed: `apt-get install espeak-ng` (scripts/setup.sh does)")
    subprocess.run([espeak, "-s", "150", "-w", str(out), text], check=True, timeout=60)
    return out.read_bytes()


def _serve_feeds(http: LocalHTTPServer, work: Path) -> dict[str, str]:
    """Both feeds on the local server, each episode espeak audio with its text as reference;
    returns feed URL by title."""
    urls = {}
    for f, (title, texts) in enumerate(FEEDS.items()):
        items = []
        for n, text in enumerate(texts, start=1):
            stem = f"f{f}e{n}"
            audio = http.route(
                f"/{stem}.wav", Reply(_speech(text, work / f"{stem}.wav"), content_type="audio/wav")
            )
            ref = http.route(f"/{stem}.txt", Reply(text.encode(), content_type="text/plain"))
            items.append(Item(f"{title} {n}", stem, (audio, "audio/wav"), ((ref, "text/plain"),)))
        urls[title] = http.route(
            f"/feed{f}.xml", Reply(rss(title, items), content_type="application/rss+xml")
        )
    return urls


def _online_workers(api: str) -> set[str] | None:
    reply = httpx.post(f"{api}/work_pools/{POOL}/workers/filter", json={}, timeout=10)
    if reply.status_code != 200:
        return None
    return {w["name"] for w in reply.json() if w.get("status") == "ONLINE"}


def _runs_started(worker_log: str) -> list[str]:
    """The flow runs a worker submitted and the server did not abort, from its log."""
    submitted = re.findall(r"Worker '[^']+' submitting flow run '([0-9a-f-]+)'", worker_log)
    aborted = set(re.findall(r"Aborted submission of flow run '([0-9a-f-]+)'", worker_log))
    return [i for i in submitted if i not in aborted]


def test_two_workers_split_two_feeds_and_transcribe_each_episode_once(
    prefect_on_postgres: PrefectServer,
    postgres_url: str,
    http_server: LocalHTTPServer,
    tmp_path: Path,
) -> None:
    server, db = prefect_on_postgres, postgres_url
    shared = tmp_path / "shared"  # the mount every machine has at its own path
    feeds = _serve_feeds(http_server, tmp_path)
    # The machine that deploys (the Prefect server's, say) is a third one.
    admin = Machine("admin", tmp_path / "admin")
    run_ok(
        [str(PODSCRIBE), "deploy", "--pool", POOL, "--poll-every", "0"],
        admin.env(server, db, shared),
        admin.root,
    )
    machines = [Machine(name, tmp_path / name) for name in ("worker-a", "worker-b")]
    workers = []
    try:
        for m in machines:
            env = m.env(server, db, shared)
            with (m.root / "worker.log").open("w") as log:
                workers.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL]
                        + ["--type", "process", "--name", m.name, "--limit", "1"],
                        env=env,
                        cwd=m.root,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        wait_for(
            "both workers online",
            lambda: _online_workers(server.api) == {m.name for m in machines},
            120,
        )
        # Two polls of both feeds at once, usually one on each worker (each takes one run at a
        # time); both claim the same episodes, and each episode is started once.
        params = json.dumps({"feeds": list(feeds.values())})
        for _ in range(2):
            run_ok(
                [sys.executable, "-m", "prefect", "deployment", "run", "poll-feeds/poll-feeds"]
                + ["--params", params],
                admin.env(server, db, shared),
                admin.root,
            )
        n = sum(len(texts) for texts in FEEDS.values())
        rows = wait_for("every episode done or failed", lambda: final_episodes(db, n), 600, 3)
        wait_for("every flow run ended", lambda: flow_runs_settled(server.database, 2 + n), 120, 2)
        wait_for(
            "the workers' flow-run processes exited",
            lambda: all(flow_processes_exited(w.pid) for w in workers),
            60,
        )
    finally:
        for w in workers:
            stop(w)
    logs = {m.name: (m.root / "worker.log").read_text() for m in machines}

    # Each episode transcribed once: done on its first claim, with one flow run, whose
    # idempotency key is that claim's.
    assert {r.state for r in rows} == {"done"}, [(r.title, r.last_error) for r in rows]
    # scored against the feed's text (tiny.en on espeak: WER 0.3-0.7, not what is tested here)
    assert [(r.attempts, r.last_wer is not None) for r in rows] == [(1, True)] * len(rows)
    with psycopg.connect(server.database) as conn:
        runs = conn.execute(
            "SELECT id::text, name, state_type, idempotency_key FROM flow_run"
        ).fetchall()
    names = Counter(r[1] for r in runs)
    assert names == Counter({"poll feeds": 2} | {f"transcribe {r.title}": 1 for r in rows}), runs
    by_id = {r[0]: r for r in runs}
    for row in rows:
        _, _, state, key = by_id[str(row.flow_run_id)]
        assert (state, key) == ("COMPLETED", f"{row.episode_id}-{row.claim_id}")

    # Who ran what, from each worker's log. Both workers may pick the same scheduled run; the
    # server lets one submission through and aborts the other's ("Aborted submission").
    ran = {m.name: _runs_started(logs[m.name]) for m in machines}
    assert sorted(i for ids in ran.values() for i in ids) == sorted(by_id), ran  # each once
    worker_of = {i: name for name, ids in ran.items() for i in ids}
    episode_workers = Counter(worker_of[str(r.flow_run_id)] for r in rows)
    assert set(episode_workers) == {"worker-a", "worker-b"}, (episode_workers, logs)
    # ... and on disk: each episode's audio is in exactly its worker's own audio root.
    for row in rows:
        where = [m.name for m in machines if (m.audio / row.episode_id).is_dir()]
        assert where == [worker_of[str(row.flow_run_id)]], (row.episode_id, where)

    # Every output and one history, in the shared root, seen from either worker's machine.
    for m in machines:
        env = m.env(server, db, shared)
        history = json.loads(run_ok([str(PODSCRIBE), "history", "--json"], env, m.root))
        assert sorted(h["episode_id"] for h in history) == sorted(r.episode_id for r in rows)
        listed = json.loads(run_ok([str(PODSCRIBE), "episodes", "--json"], env, m.root))
        assert {(e["episode_id"], e["state"]) for e in listed} == {
            (r.episode_id, "done") for r in rows
        }
        root = Path(env["PODSCRIBE_TRANSCRIPTS_ROOT"])
        for row in rows:
            for name in ("transcript.json", "transcript.txt", "score.json", "report.html"):
                assert (root / row.episode_id / name).is_file(), (m.name, row.episode_id, name)
    assert [p.name for p in shared.rglob("history.jsonl")] == ["history.jsonl"]
    catalog.close_catalog(db)
