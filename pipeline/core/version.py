"""The code version recorded with every result, so any number can be traced to its code."""

from __future__ import annotations

import functools
import subprocess
from pathlib import Path

from pipeline import __version__

_REPO = Path(__file__).resolve().parents[2]


@functools.cache
def code_version() -> str:
    """``<package version>+g<commit>[.dirty]`` inside a git checkout, else the package version."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "--short=10", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{commit}" + (".dirty" if dirty else "")
