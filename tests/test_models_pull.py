"""Downloading standard Whisper weights once, verified, from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import LocalHTTPServer

from pipeline.asr.weights import (
    WeightsSource,
    ensure_model,
    pull_model,
    resolve_model,
    whisper_weights_table,
)
from pipeline.core.errors import ModelError
from pipeline.sources.net import FetchLimits

ROOT = Path(__file__).resolve().parent.parent
LOCAL = FetchLimits(allow_private_networks=True)


def _checkpoint() -> bytes:
    """A small file in torch's zip layout with the keys an openai-whisper checkpoint has."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        # A fixed date: the same bytes (and sha256) on every call.
        entry = zipfile.ZipInfo("archive/data.pkl", date_time=(2025, 1, 1, 0, 0, 0))
        zf.writestr(entry, pickle.dumps({"dims": {}, "model_state_dict": {}}))
    return buf.getvalue()


@pytest.fixture
def whisper_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """whisper's own cache rule ($XDG_CACHE_HOME/whisper), pointed at a temporary folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "whisper"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_table_comes_from_openai_whisper() -> None:
    import whisper

    table = whisper_weights_table()
    assert set(table) == set(whisper._MODELS)
    for name, (filename, sha) in table.items():
        # The default base URL rebuilds openai-whisper's own URL exactly.
        assert f"{WeightsSource().base_url}/{sha}/{filename}" == whisper._MODELS[name]
    assert table["large"] == table["large-v3"] and table["small.en"][0] == "small.en.pt"


def test_pull_verifies_caches_and_reuses(http_server: LocalHTTPServer, whisper_cache: Path) -> None:
    data = _checkpoint()
    sha = hashlib.sha256(data).hexdigest()
    http_server.route(f"/w/{sha}/small.en.pt", data)
    source = WeightsSource(http_server.url("/w"), LOCAL, {"small.en": ("small.en.pt", sha)})

    path = pull_model("small.en", source)
    assert path == whisper_cache / "small.en.pt" and path.read_bytes() == data
    assert pull_model("small.en", source) == path  # cached: not downloaded again
    assert http_server.hits[f"/w/{sha}/small.en.pt"] == 1
    info = resolve_model("small.en")  # found where whisper itself looks
    assert info.path == path and info.sha256 == sha
    assert sorted(p.name for p in whisper_cache.iterdir()) == ["small.en.pt"]


def test_wrong_digest_fails_and_caches_nothing(
    http_server: LocalHTTPServer, whisper_cache: Path
) -> None:
    data = _checkpoint()
    claimed = hashlib.sha256(b"the real weights").hexdigest()
    url = http_server.route(f"/w/{claimed}/small.en.pt", data)
    source = WeightsSource(http_server.url("/w"), LOCAL, {"small.en": ("small.en.pt", claimed)})
    with pytest.raises(ModelError) as info:
        pull_model("small.en", source)
    got = hashlib.sha256(data).hexdigest()
    assert str(info.value) == (
        f"downloaded {url} but its sha256 is {got}, not {claimed}: not cached "
        "(a broken mirror or a tampered file)"
    )
    assert not whisper_cache.exists() or list(whisper_cache.iterdir()) == []
    with pytest.raises(ModelError, match="is not available offline"):
        resolve_model("small.en")


def test_offline_fails_at_once_saying_how(whisper_cache: Path) -> None:
    source = WeightsSource(f"http://127.0.0.1:{_closed_port()}/w", LOCAL)
    started = time.monotonic()
    with pytest.raises(ModelError) as info:
        ensure_model("large-v3", source)
    assert time.monotonic() - started < 5
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot download model 'large-v3' (")
    assert message.endswith(
        "run `podscribe models pull large-v3` on a machine with internet, or copy "
        f"large-v3.pt into {whisper_cache} (whisper's cache)"
    )
    with pytest.raises(ModelError, match=r"`podscribe models pull small\.en` on a machine"):
        resolve_model("small.en")  # never downloads


def test_unknown_names_are_not_downloaded(whisper_cache: Path) -> None:
    with pytest.raises(ModelError, match="unknown model 'huge'"):
        ensure_model("huge", WeightsSource("http://127.0.0.1:9/w", LOCAL))
    with pytest.raises(ModelError, match="unknown model 'huge': standard names are tiny.en"):
        pull_model("huge", WeightsSource("http://127.0.0.1:9/w", LOCAL))


def test_cli_pull_refuses_a_forged_file(http_server: LocalHTTPServer, tmp_path: Path) -> None:
    # The real table's digest for small.en cannot match this file: the CLI must say so.
    sha = whisper_weights_table()["small.en"][1]
    http_server.route(f"/w/{sha}/small.en.pt", _checkpoint())
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
        "PODSCRIBE_WEIGHTS_BASE_URL": http_server.url("/w"),
        "COLUMNS": "300",
        "NO_COLOR": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.app", "models", "pull", "small.en"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    assert f"but its sha256 is {hashlib.sha256(_checkpoint()).hexdigest()}, not {sha}" in lines[0]
    assert not (tmp_path / "xdg" / "whisper" / "small.en.pt").exists()
