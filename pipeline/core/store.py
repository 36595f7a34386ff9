"""Where things live on disk, and how they are written (atomically, always)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pipeline.core.errors import OptionsError, StorageError

# Read in one place; the CLI and flows pass explicit paths down.
DEFAULT_AUDIO_ROOT = Path("audio")
DEFAULT_TRANSCRIPTS_ROOT = Path("transcripts")
_HASH_BLOCK = 1 << 20  # bytes read per step when hashing a file
# Write failures that are about the disk, not the data: the user can free space and re-run.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)

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
    overwritten), and the temporary file is removed. A full (or read-only) disk is a
    StorageError naming the file, not a traceback.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        os.replace(tmp, target)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise disk_error(target, exc) from exc
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def disk_error(target: Path, exc: OSError) -> StorageError:
    """The one-line error for a write that the disk refused."""
    return StorageError(
        f"cannot write {target}: {exc.strerror or exc} — free some space (or choose another "
        "folder) and run again; files written before are intact"
    )


@contextlib.contextmanager
def atomic_files() -> Iterator[Callable[[Path, bytes], Path]]:
    """Write several files as one: yields ``stage(target, data)``, which writes ``data``
    (fsynced) to a temp file beside ``target``; when the block ends without error, every
    staged file is renamed over its target. A rename takes no space, so a disk that fills up
    fails while staging, before any target has changed: the old set of files stays whole,
    never a mix of old and new. Temp files never outlive the block."""
    staged: list[tuple[Path, Path]] = []
    target = Path()

    def stage(path: Path, data: bytes) -> Path:
        nonlocal target
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        staged.append((Path(name), target))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return target

    try:
        yield stage
        for tmp, final in staged:
            target = final
            os.replace(tmp, final)
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise disk_error(target, exc) from exc
        raise
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the indented UTF-8 JSON every podscribe file holds."""
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


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
    return write_bytes_atomic(target, json_bytes(obj))


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as f:
        return json.load(f)
