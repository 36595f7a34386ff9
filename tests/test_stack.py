"""The production stack, started for real: PostgreSQL from the distribution's package, a Prefect
server on it, the catalog on it, `podscribe serve`, and one poll of the demo feed end to end.

docker-compose.yml describes the same stack with the same settings (tests/stack.py;
test_compose.py checks the file against them and validates it).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
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

from pipeline.demo import DEMO_TITLES, serve_demo_feed
from pipeline.sources import catalog

pytestmark = [pytest.mark.stack, pytest.mark.slow, pytest.mark.timeout(900)]


def test_podscribe_serve_polls_the_demo_feed_on_postgres_end_to_end(
    prefect_on_postgres: PrefectServer, postgres_url: str, tmp_path: Path
) -> None:
    data = tmp_path / "data"  # the compose file's /data volumes
    settings = podscribe_settings(
        prefect_on_postgres.api,
        postgres_url,
        audio=data / "audio",
        transcripts=data / "transcripts",
        results=data / "results",
    )
    env = child_env(settings)
    work = tmp_path / "serve"  # its own working directory: nothing lands in the checkout
    work.mkdir()
    with serve_demo_feed(port=0) as feed, (tmp_path / "serve.log").open("w") as log:
        serve = subprocess.Popen(
            [str(PODSCRIBE), "serve", "--poll-every", "0", "--feed", feed],
            env=env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                "poll-feeds deployment served",
                lambda: (
                    "poll-feeds"
                    in run_ok([sys.executable, "-m", "prefect", "deployment", "ls"], env, work)
                    or serve.poll() is not None
                ),
                120,
                every_s=2,
            )
            assert serve.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            # One poll, started the way a user (or the schedule) starts it: a deployment run.
            run_ok(
                [sys.executable, "-m", "prefect", "deployment", "run", "poll-feeds/poll-feeds"],
                env,
                work,
            )
            rows = wait_for(
                "the demo feed's episodes done",
                lambda: final_episodes(postgres_url, len(DEMO_TITLES)),
                480,
                every_s=3,
            )
            wait_for(
                "the poll's and the episodes' flow runs ended",
                lambda: flow_runs_settled(prefect_on_postgres.database, 1 + len(DEMO_TITLES)),
                120,
                every_s=2,
            )
            wait_for(
                "serve's flow-run processes exited", lambda: flow_processes_exited(serve.pid), 60
            )
        finally:
            stop(serve)
    log_text = (tmp_path / "serve.log").read_text()
    assert {r.state for r in rows} == {"done"}, [(r.title, r.last_error) for r in rows]
    assert {r.title for r in rows} == set(DEMO_TITLES)
    for row in rows:
        assert (row.attempts, row.last_error) == (1, None)
        # real speech, scored against the feed's <podcast:transcript>
        assert row.last_wer is not None and row.last_wer < 0.3, (row.title, row.last_wer)
        out = data / "transcripts" / row.episode_id
        words = json.loads((out / "transcript.json").read_text())
        assert words and "WER" in (out / "report.html").read_text()
        assert (data / "audio" / row.episode_id).is_dir()
    history = (data / "transcripts" / "history.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["episode_id"] for line in history) == sorted(
        r.episode_id for r in rows
    )
    # The runs are in Prefect's tables in PostgreSQL, each episode's run served by
    # `podscribe serve` as a run of the transcribe-episode deployment.
    with psycopg.connect(prefect_on_postgres.database) as conn:
        runs = conn.execute(
            "SELECT r.id::text, r.name, r.state_type, d.name FROM flow_run r "
            "JOIN deployment d ON d.id = r.deployment_id"
        ).fetchall()
    by_id = {r[0]: r for r in runs}
    assert sorted(r[1] for r in runs) == sorted(
        ["poll feeds"] + [f"transcribe {t}" for t in DEMO_TITLES]
    ), runs
    for row in rows:
        _, name, state, deployment = by_id[str(row.flow_run_id)]
        assert (name, state, deployment) == (
            f"transcribe {row.title}",
            "COMPLETED",
            "transcribe-episode",
        )
    assert "Traceback" not in log_text, log_text[-3000:]
    catalog.close_catalog(postgres_url)
