"""Dask workers on "other machines": separate processes that share nothing with the flow but
an S3 storage root (moto's server on loopback).

Each worker has its own working directory, HOME (so its own converted weights), TMPDIR and
podscribe roots, and an environment built from scratch: only the code, the Prefect API and the
S3 endpoint are common. The flow's audio root is a relative path under the flow's own working
directory, so the chunk paths in its manifest do not exist from a worker's directory: a worker
that tried to read the flow's disk would fail instead of passing by accident.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import MotoServer, free_port, s3_env

pytestmark = [pytest.mark.multimachine, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
EPISODE = "mm-speech"


def _worker_env(home: Path, api_url: str, endpoint: str) -> dict[str, str]:
    """A worker's whole environment: nothing of the test process's but PATH."""
    for name in ("home", "tmp", "audio", "transcripts", "results"):
        (home / name).mkdir(parents=True, exist_ok=True)
    return {
        "PATH": os.environ["PATH"],
        "LANG": "C.UTF-8",
        "PYTHONPATH": str(REPO),  # the same release of podscribe on every machine
        "HOME": str(home / "home"),
        "TMPDIR": str(home / "tmp"),
        "PODSCRIBE_AUDIO_ROOT": str(home / "audio"),
        "PODSCRIBE_TRANSCRIPTS_ROOT": str(home / "transcripts"),
        "PODSCRIBE_RESULTS_DIR": str(home / "results"),
        "PODSCRIBE_DB": str(home / "catalog.db"),
        "PREFECT_API_URL": api_url,
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        **s3_env(endpoint),
    }


@pytest.fixture
def dask_cluster(
    tmp_path: Path, prefect_api: str, moto_server: MotoServer
) -> Iterator[tuple[str, dict[str, int], list[Path]]]:
    """A `dask scheduler` and two `dask worker` processes (no nanny: the worker's pid is the
    process that runs the tasks); yields (address, {worker address: pid}, worker dirs)."""
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []
    logs = tmp_path / "dask-logs"
    logs.mkdir()
    homes = [tmp_path / f"machine-{i}" for i in (1, 2)]
    try:
        sched_home = tmp_path / "machine-scheduler"
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1"]
                + ["--port", str(port), "--no-dashboard"],
                cwd=tmp_path,
                env=_worker_env(sched_home, prefect_api, moto_server.endpoint),
                stdout=open(logs / "scheduler.log", "wb"),  # noqa: SIM115 - closed with the process
                stderr=subprocess.STDOUT,
            )
        )
        for i, home in enumerate(homes, start=1):
            env = _worker_env(home, prefect_api, moto_server.endpoint)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1"]
                    + ["--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"machine-{i}"]
                    + ["--local-directory", str(home / "tmp")],
                    cwd=home,
                    env=env,
                    stdout=open(logs / f"worker-{i}.log", "wb"),  # noqa: SIM115
                    stderr=subprocess.STDOUT,
                )
            )
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            pids = client.run(os.getpid)
        yield address, pids, homes
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _segments(path: Path | bytes) -> list[tuple[float, float, str]]:
    data = json.loads(path if isinstance(path, bytes) else path.read_bytes())
    return [(s["start"], s["end"], s["text"]) for s in data["segments"]]


def test_chunks_transcribed_on_workers_that_share_only_storage(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fixtures_dir: Path,
    s3_root: str,
    dask_cluster: tuple[str, dict[str, int], list[Path]],
) -> None:
    from flows.episode import transcribe_episode
    from pipeline.asr.cache import STORE_DIRNAME, StoredChunkResults
    from pipeline.core.storage import Storage
    from pipeline.quality.history import read_stored_history

    address, worker_pids, worker_homes = dask_cluster
    source = str(fixtures_dir / "speech.ogg")

    # One machine first: threads in this process, local roots, no storage. One chunk task at
    # a time, as each one-thread worker below runs them (same batches, same decoding).
    alone = tmp_path / "alone"
    alone.mkdir()
    monkeypatch.chdir(alone)
    monkeypatch.setenv("PODSCRIBE_WORKERS", "1")
    for name in ("audio_root", "transcripts_root", "results_dir"):
        monkeypatch.setenv(f"PODSCRIBE_{name.upper()}", name)
    monkeypatch.setenv("PODSCRIBE_DB", str(alone / "catalog.db"))
    single = transcribe_episode(source=source, episode_id=EPISODE, max_chunk_s=5.0)
    assert single["chunks"] >= 2

    # The flow's machine: relative roots under its own directory, chunk tasks on the cluster.
    flow_dir = tmp_path / "machine-flow"
    flow_dir.mkdir()
    monkeypatch.chdir(flow_dir)
    monkeypatch.setenv("PODSCRIBE_STORAGE_URL", s3_root)
    monkeypatch.setenv("PODSCRIBE_TASK_RUNNER", "dask")
    monkeypatch.setenv("PODSCRIBE_DASK_ADDRESS", address)
    monkeypatch.setenv("PODSCRIBE_DB", str(flow_dir / "catalog.db"))
    spread = transcribe_episode(source=source, episode_id=EPISODE, max_chunk_s=5.0)
    assert spread["chunks"] == single["chunks"]
    assert spread["transcribed"] == list(range(1, spread["chunks"] + 1))

    storage = Storage(s3_root)
    # Every chunk was transcribed by a worker process, none by this one, and each result
    # went to the shared root (the flow's local chunk store stays empty).
    made_by = [e["made_by"] for e in StoredChunkResults(storage).entries()]
    assert len(made_by) == spread["chunks"]
    assert {m["pid"] for m in made_by} <= set(worker_pids.values())
    assert os.getpid() not in {m["pid"] for m in made_by}
    assert not (flow_dir / "audio_root" / STORE_DIRNAME).exists()
    # The workers read their chunks from storage into their own temp dirs, never a root.
    for home in worker_homes:
        assert not (home / "audio" / EPISODE).exists()
        assert (home / "home" / ".cache" / "podscribe" / "models").is_dir(), "own weights"

    # The same transcript as on one machine, in the flow's folder and on the shared root.
    local = _segments(alone / "transcripts_root" / EPISODE / "transcript.json")
    assert local and _segments(flow_dir / "transcripts_root" / EPISODE / "transcript.json") == local
    assert _segments(storage.get_bytes(f"transcripts/{EPISODE}/transcript.json")) == local
    # Chunks, manifest, Prefect's persisted results and the history record are there too.
    keys = storage.list("audio/" + EPISODE)
    assert f"audio/{EPISODE}/manifest.json" in keys
    assert sum("/chunks/" in k for k in keys) == spread["chunks"]
    assert storage.list("results"), "Prefect results persisted on the shared root"
    assert [r.episode_id for r in read_stored_history(storage)] == [EPISODE]

    # Speakers: the diarize task runs on a worker too, which has no decoded WAV of its own:
    # the flow publishes it beside the chunks and the task fetches it (checked) from there.
    dialogue = transcribe_episode(
        source=str(fixtures_dir / "dialogue.mp3"),
        episode_id="mm-dialogue",
        reference=str(fixtures_dir / "dialogue.txt"),
        max_chunk_s=15.0,
        speakers="auto",
    )
    assert dialogue["transcribed"] == list(range(1, dialogue["chunks"] + 1))
    assert storage.exists("audio/mm-dialogue/decoded-16k-mono.wav")
    assert not storage.exists(f"audio/{EPISODE}/decoded-16k-mono.wav"), "only when diarizing"
    transcript = json.loads(
        (flow_dir / "transcripts_root" / "mm-dialogue" / "transcript.json").read_bytes()
    )
    assert {s["speaker"] for s in transcript["segments"]} == {"Host", "Guest"}
    assert transcript["provenance"]["diarization"]["made_by"]["pid"] in set(worker_pids.values())
    for home in worker_homes:
        assert not (home / "audio" / "mm-dialogue").exists()
