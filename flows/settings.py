"""What the flows add to podscribe's settings (``pipeline.settings``): Prefect result storage.

Settings are read when a flow run starts (``load_settings()`` in the flow body), never at import,
so a worker, a test or the demo can point the flows at other folders by setting ``PODSCRIBE_*``
variables before running them.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from prefect.filesystems import LocalFileSystem, RemoteFileSystem, WritableFileSystem

from pipeline.core.storage import Storage, is_url
from pipeline.settings import Settings, load_settings

__all__ = [
    "DEVICE_LIMIT",
    "DIARIZE_LIMIT",
    "Settings",
    "load_settings",
    "result_storage",
    "shared_storage",
]

DEVICE_LIMIT = "whisper-device"  # the global concurrency limit that chunk transcriptions hold
DIARIZE_LIMIT = "podscribe-diarize"  # the one diarize tasks hold (PODSCRIBE_DIARIZE_SLOTS)


RESULTS_PREFIX = "results"  # Prefect's persisted results under a shared storage root


def shared_storage(settings: Settings) -> Storage | None:
    """The shared storage root (PODSCRIBE_STORAGE_URL), or None: one machine, local roots."""
    return Storage(settings.storage_url) if settings.storage_url else None


def result_storage(settings: Settings) -> WritableFileSystem:
    """Where Prefect persists task results, as a saved block (saved once per process): the
    results folder, or ``results/`` under the shared storage root when there is one (a
    RemoteFileSystem for a URL), so a Retry on any machine finds the finished chunks."""
    from prefect.settings import PREFECT_API_URL

    if settings.storage_url and is_url(settings.storage_url):
        basepath = settings.storage_url.rstrip("/") + "/" + RESULTS_PREFIX
    elif settings.storage_url:
        basepath = str((Path(settings.storage_url) / RESULTS_PREFIX).resolve())
    else:
        basepath = str(settings.results_dir.resolve())
    return _saved_storage(basepath, PREFECT_API_URL.value())


@functools.lru_cache(maxsize=8)
def _saved_storage(basepath: str, api_url: str | None) -> WritableFileSystem:
    # Prefect wants result storage saved server-side, so that any process handling a retry
    # finds the same folder. One block per folder: its name carries the path's hash. The
    # saved instance, not its slug, goes to the tasks: given a slug, every task run would
    # load the block from the API before it starts.
    name = "podscribe-results-" + hashlib.sha256(basepath.encode()).hexdigest()[:10]
    # A URL's credentials are not in the block: each process's fsspec finds its own.
    block: WritableFileSystem
    if is_url(basepath):
        block = RemoteFileSystem(basepath=basepath)
    else:
        block = LocalFileSystem(basepath=basepath)
    block.save(name, overwrite=True)
    return block
