"""A storage root that several machines can share: a local folder or an fsspec URL.

``Storage("s3://bucket/podscribe")``, ``Storage("gs://bucket/podscribe")``,
``Storage("file:///mnt/shared/podscribe")`` or ``Storage("/srv/podscribe")`` all read and write
objects by *key* (``audio/ep-1/chunks/chunk-0000.wav``), relative to the root. The local audio
and transcripts folders stay what they are (a working copy and cache on each machine); what a
process on another machine needs goes through a Storage.

Writes never leave a half object a reader would trust:

- a local root writes a temp file beside the target, fsyncs it and renames it over the target
  (``pipeline.core.store``), as every podscribe file is written;
- an object store (S3, GCS, Azure, memory) makes an object visible only once its whole body is
  uploaded, so one put is already atomic;
- any other filesystem (SFTP, HDFS, ...) gets a temp key beside the target, then a move.

Credentials and endpoints come from fsspec's usual places (for S3: ``AWS_*`` variables,
``~/.aws``; for GCS: ``GOOGLE_APPLICATION_CREDENTIALS``; or ``FSSPEC_<PROTOCOL>_<OPTION>``
variables), never from podscribe's settings: the URL says where, the environment says who.
"""

from __future__ import annotations

import contextlib
import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import ChecksumError, StorageError
from pipeline.core.store import atomic_path, sha256_file, write_bytes_atomic

# Filesystems whose single put is atomic (an object appears whole or not at all).
ATOMIC_PUT_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "memory"})


def is_url(root: str | Path) -> bool:
    """Whether ``root`` names a URL (``scheme://...``) rather than a local path."""
    return "://" in str(root)


@dataclass(frozen=True)
class Storage:
    """Objects under one root, read and written by key."""

    url: str  # a local path, or an fsspec URL; the root of every key

    def __post_init__(self) -> None:
        if not str(self.url).strip():
            raise StorageError("the storage root is empty: give a folder or an fsspec URL")

    @functools.cached_property
    def _fs_and_root(self) -> tuple[Any, str]:
        from fsspec.core import url_to_fs  # fsspec: only when storage is used

        try:
            fs, root = url_to_fs(str(self.url))
        except (ImportError, ValueError) as exc:  # an unknown scheme, or s3fs/gcsfs missing
            raise StorageError(
                f"cannot open storage {self.url}: {exc} — install the filesystem's package "
                "(s3fs for s3://, gcsfs for gs://) or give a local folder"
            ) from exc
        return fs, root.rstrip("/")

    @property
    def fs(self) -> Any:
        """The fsspec filesystem of the root."""
        return self._fs_and_root[0]

    @property
    def local(self) -> bool:
        """Whether the root is a folder on this machine (renames are atomic there)."""
        return "file" in _protocols(self.fs)

    def path(self, key: str) -> str:
        """The filesystem path of ``key``; a key that would leave the root is refused."""
        parts = key.split("/")
        if not key or key.startswith("/") or any(p in ("..", ".", "") for p in parts):
            raise StorageError(f"storage key {key!r} is not a relative path under the root")
        return f"{self._fs_and_root[1]}/{key}"

    def uri(self, key: str) -> str:
        """``key`` as one string a user can read in a message (the URL, or the local path)."""
        return self.fs.unstrip_protocol(self.path(key)) if not self.local else self.path(key)

    # --- writes --------------------------------------------------------------------------

    def put_bytes(self, key: str, data: bytes) -> str:
        """Write ``data`` at ``key`` atomically; returns the key."""
        target = self.path(key)
        with self._errors("write", key):
            if self.local:
                write_bytes_atomic(Path(target), data)
            elif _protocols(self.fs) & ATOMIC_PUT_PROTOCOLS:
                self.fs.pipe_file(target, data)
            else:
                tmp = f"{target}.{uuid.uuid4().hex}.tmp"
                self.fs.pipe_file(tmp, data)
                self.fs.mv(tmp, target)
        return key

    def put_file(self, key: str, source: Path) -> str:
        """Copy the local file ``source`` to ``key`` atomically; returns the key."""
        target = self.path(key)
        with self._errors("write", key):
            if self.local:
                with atomic_path(Path(target)) as staged:
                    self.fs.cp_file(str(source), str(staged))
            elif _protocols(self.fs) & ATOMIC_PUT_PROTOCOLS:
                self.fs.put_file(str(source), target)  # multipart uploads complete as one
            else:
                tmp = f"{target}.{uuid.uuid4().hex}.tmp"
                self.fs.put_file(str(source), tmp)
                self.fs.mv(tmp, target)
        return key

    def delete(self, key: str) -> None:
        """Remove ``key`` if it is there."""
        if self.exists(key):
            with self._errors("delete", key):
                self.fs.rm_file(self.path(key))

    # --- reads ---------------------------------------------------------------------------

    def exists(self, key: str) -> bool:
        """Whether an object is stored at ``key``."""
        with self._errors("look up", key):
            return bool(self.fs.isfile(self.path(key)))

    def get_bytes(self, key: str) -> bytes:
        """The whole object at ``key``; StorageError naming it when it is missing."""
        with self._errors("read", key):
            return bytes(self.fs.cat_file(self.path(key)))

    def get_file(self, key: str, dest: Path) -> Path:
        """Copy the object at ``key`` to the local file ``dest`` (atomically); returns ``dest``."""
        with self._errors("read", key), atomic_path(Path(dest)) as tmp:
            self.fs.get_file(self.path(key), str(tmp))
        return Path(dest)

    def get_verified(self, key: str, dest: Path, sha256: str) -> Path:
        """``get_file``, then check the copy's sha256: ChecksumError (and no file at ``dest``)
        when it differs from ``sha256``, so a damaged or replaced object is never used."""
        # Checked before it takes ``dest``'s place: a bad fetch never replaces a good copy.
        with self._errors("read", key), atomic_path(Path(dest)) as tmp:
            self.fs.get_file(self.path(key), str(tmp))
            actual = sha256_file(Path(tmp))
            if actual != sha256:
                raise ChecksumError(
                    f"{self.uri(key)} has sha256 {actual[:12]}, expected {sha256[:12]}: the "
                    "stored object changed or was damaged — publish it again (re-run the episode)"
                )
        return Path(dest)

    def list(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (a folder-like key), sorted; none when there is nothing."""
        base = self.path(prefix.rstrip("/"))
        with self._errors("list", prefix):
            try:
                found = self.fs.find(base)
            except FileNotFoundError:
                return []
        root = self._fs_and_root[1] + "/"
        keys = [p[len(root) :] for p in found if p.startswith(root)]
        return sorted(k for k in keys if not k.endswith(".tmp"))

    @contextlib.contextmanager
    def _errors(self, verb: str, key: str) -> Iterator[None]:
        """Turn a filesystem's OSError into one StorageError line naming the object."""
        try:
            yield
        except StorageError:
            raise
        except OSError as exc:
            why = "not found" if isinstance(exc, FileNotFoundError) else str(exc)
            raise StorageError(
                f"cannot {verb} {self.uri(key)}: {why or type(exc).__name__} — check the "
                "storage URL (PODSCRIBE_STORAGE_URL) and its credentials"
            ) from exc


def check_storage(storage: Storage) -> None:
    """Fail now, in one line, when the root cannot be listed (a typo, no credentials, the
    filesystem's package missing), rather than in the first chunk task on another machine."""
    storage.list("transcripts")


def _protocols(fs: Any) -> set[str]:
    protocol = fs.protocol
    return {protocol} if isinstance(protocol, str) else set(protocol)
