"""Shared test helpers: the committed fixtures, and ffmpeg for making audio at test time."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from pipeline.audio import find_ffmpeg

FIXTURES_DIR = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed fixtures (speech.ogg, episode.mp3 and their reference texts)."""
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def ffmpeg_exe() -> str:
    """The ffmpeg the pipeline itself would use."""
    return find_ffmpeg()


@pytest.fixture(scope="session")
def run_ffmpeg(ffmpeg_exe: str) -> Callable[..., Path]:
    """Run ffmpeg with the given arguments (the last one is the output) and return that path.

    For making test audio from lavfi sources, e.g.
    ``run_ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=3", tmp_path / "tone.wav")``.
    """

    def run(*args: str | Path) -> Path:
        cmd = [ffmpeg_exe, "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
        done = subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ffmpeg {' '.join(map(str, args))} failed: {done.stderr}")
        return Path(args[-1])

    return run
