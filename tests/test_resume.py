"""Crashes lose nothing: `kill -9` of `podscribe transcribe` mid-episode, then the same
command again, reuses the chunks already finished; a disk that fills up is one line of error
and leaves what was written before intact."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_cli import podscribe

from pipeline.asr.cache import STORE_DIRNAME
from pipeline.core.errors import StorageError
from pipeline.core.store import write_json_atomic

ROOT = Path(__file__).resolve().parent.parent


def transcribe_args(fixtures_dir: Path) -> list[str]:
    # Chunks of at most 8 s (six or seven of them), decoded one at a time, so that they
    # finish one by one and the kill lands between two of them.
    return [
        "transcribe",
        str(fixtures_dir / "episode.mp3"),
        "--episode-id",
        "ep",
        "--max-chunk-s",
        "8",
        "--batch-size",
        "1",
        "--json",
    ]


def stored_entries(cwd: Path) -> list[Path]:
    return sorted((cwd / "audio" / STORE_DIRNAME).glob("??/*.json"))


def summary_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def segments_of(cwd: Path) -> list[tuple[float, float, str]]:
    data = json.loads((cwd / "transcripts" / "ep" / "transcript.json").read_text())
    return [(s["start"], s["end"], s["text"]) for s in data["segments"]]


@pytest.mark.slow
def test_kill_9_mid_episode_then_the_same_command_reuses_finished_chunks(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    args = transcribe_args(fixtures_dir)
    whole, cut_short = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir()
    cut_short.mkdir()
    uninterrupted = summary_of(podscribe(*args, cwd=whole))
    assert uninterrupted["chunks"] >= 6 and uninterrupted["chunks_reused"] == 0

    env = os.environ | {"COLUMNS": "200", "NO_COLOR": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cut_short,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(stored_entries(cut_short)) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "no chunk result was stored within 300 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    stored = stored_entries(cut_short)
    assert 2 <= len(stored) < uninterrupted["chunks"], "killed mid-episode"
    assert not (cut_short / "transcripts" / "ep" / "transcript.json").exists()

    # Nothing partial is trusted: a damaged entry (half a file) is transcribed again.
    damaged = stored[0]
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])

    resumed = summary_of(podscribe(*args, cwd=cut_short))
    assert resumed["chunks"] == uninterrupted["chunks"]
    assert resumed["chunks_reused"] == len(stored) - 1
    assert segments_of(cut_short) == segments_of(whole)  # same text, same times
    assert (cut_short / "transcripts" / "ep" / "transcript.txt").read_text() == (
        whole / "transcripts" / "ep" / "transcript.txt"
    ).read_text()
    assert len(stored_entries(cut_short)) == uninterrupted["chunks"]
    print(
        f"killed with {len(stored)} of {resumed['chunks']} chunks stored, one damaged: "
        f"{resumed['chunks_reused']} reused; whole run {uninterrupted['elapsed_s']:.1f} s, "
        f"resumed run {resumed['elapsed_s']:.1f} s"
    )

    # And once finished, the same command again transcribes nothing.
    again = summary_of(podscribe(*args, cwd=cut_short))
    assert again["chunks_reused"] == uninterrupted["chunks"]
    assert segments_of(cut_short) == segments_of(whole)


# --- a disk that fills up --------------------------------------------------------------------


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (needs root and mount rights: skip otherwise)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill a disk needs root")
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(disk: Path, leave_bytes: int) -> None:
    """Fill ``disk`` until about ``leave_bytes`` are free."""
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * max(0, free - leave_bytes))


def digests(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "filler"
    }


def test_a_full_disk_is_a_storage_error_and_old_files_stay(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        earlier = write_json_atomic(disk / "earlier.json", {"kept": True})
        before = earlier.read_bytes()
        fill(disk, 0)
        with pytest.raises(StorageError, match=r"cannot write .*earlier\.json: No space left"):
            write_json_atomic(earlier, {"kept": False, "pad": "x" * 100_000})
        assert earlier.read_bytes() == before
        assert not list(disk.glob(".*.tmp"))


def test_disk_full_while_decoding_is_one_line_and_keeps_earlier_audio(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """The audio root fills while ffmpeg writes the decoded WAV: one line, exit 2, and the
    episode decoded before is untouched."""
    from pipeline.episode import prepare_episode

    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        prepare_episode(str(fixtures_dir / "speech.ogg"), "earlier", disk)  # ~0.45 MB
        before = digests(disk)
        done = podscribe(
            "transcribe", fixtures_dir / "episode.mp3", "--audio-root", disk, cwd=tmp_path
        )  # 48 s decode to 1.5 MB: does not fit
        assert done.returncode == 2, done.stderr
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        full = r"cannot write \S+/decoded-16k-mono\.wav: No space left on device"
        assert re.search(full, lines[0]), lines[0]
        assert "free some space" in lines[0]
        assert digests(disk) == before  # nothing earlier changed, no half file left


@pytest.mark.slow
def test_disk_full_while_writing_outputs_keeps_the_earlier_transcript(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """The transcripts root fills up: the episode's new outputs fail to write in one line, and
    its earlier transcript, report, score and history stay whole (no mix of old and new)."""
    with small_tmpfs(tmp_path / "disk", "2m") as disk:
        first = podscribe(
            "transcribe", fixtures_dir / "speech.ogg", "--transcripts-root", disk,
            "--episode-id", "first", cwd=tmp_path,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        before = digests(disk)
        fill(disk, 4096)
        done = podscribe(
            "transcribe",
            fixtures_dir / "speech.ogg",
            "--transcripts-root",
            disk,
            "--episode-id",
            "first",
            "--json",
            cwd=tmp_path,
        )  # fmt: skip  (the same episode again: its old set of files must stay whole)
        assert done.returncode == 2, done.stderr
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
        assert "No space left on device" in lines[0] and "free some space" in lines[0]
        assert digests(disk) == before  # earlier outputs and history.jsonl unchanged
        assert not list(disk.rglob("*.tmp"))
