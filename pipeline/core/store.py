"""Where things live on disk, and how they are written (atomically, always)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import OptionsError

# Read in one place; the CLI and flows pass explicit paths down.
DEFAULT_AUDIO_ROOT = Path("audio")
DEFAULT_TRANSCRIPTS_ROOT = Path("transcripts")
_HASH_BLOCK = 1 << 20  # bytes read per step when hashing a file

_SLUG_BAD = re.compile(r"[^a-z0-9]+")
# An episode id is a folder name under audio/ and transcripts/: no separator, no "." or "..",
# nothing a shell or a Prefect key would trip on. Ids podscribe makes always match.
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_ID_LEN = 128


def slugify(text: str, max_len: int = 48) -> str:
    """Lowercase ``text`` to letters, digits and dashes (safe in paths and Prefect keys)."""
    slug = _SLUG_BAD.sub("-", text.lower()).strip("-")
    return slug[:max_len].strip("-") or "episode"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in blocks so large files cost no memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a string (UTF-8)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def check_episode_id(episode_id: str) -> str:
    """Return ``episode_id`` if it is safe as a folder name; else raise OptionsError.

    Ids can come from users (``--episode-id``, a flow parameter in the Prefect UI): one like
    ``../../escape`` must never become a path outside the roots.
    """
    if (
        not isinstance(episode_id, str)
        or len(episode_id) > MAX_ID_LEN
        or not _SAFE_ID.fullmatch(episode_id)
    ):
        shown = repr(episode_id)[:80]
        raise OptionsError(
            f"episode id {shown} is not safe as a folder name: use 1-{MAX_ID_LEN} letters, "
            "digits, '.', '_' or '-', starting with a letter or digit"
        )
    return episode_id


def episode_dir(root: Path, episode_id: str) -> Path:
    """The folder of one episode under ``root`` (``audio/`` or ``transcripts/``).

    Every path made from an episode id goes through here, so an unsafe id is refused
    (OptionsError) whoever passes it.
    """
    return Path(root) / check_episode_id(episode_id)


@contextlib.contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it over ``target``.

    A crash or an exception leaves ``target`` as it was (a good old file is never half
    overwritten), and the temporary file is removed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(target: Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` atomically (fsynced before the rename)."""
    with atomic_path(target) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return Path(target)


def write_text_atomic(target: Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``target`` atomically."""
    return write_bytes_atomic(target, text.encode("utf-8"))


def write_json_atomic(target: Path, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``target`` atomically."""
    return write_text_atomic(target, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
