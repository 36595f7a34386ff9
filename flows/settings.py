"""What the flows add to podscribe's settings (``pipeline.settings``): Prefect result storage.

Settings are read when a flow run starts (``load_settings()`` in the flow body), never at import,
so a worker, a test or the demo can point the flows at other folders by setting ``PODSCRIBE_*``
variables before running them.
"""

from __future__ import annotations

import functools
import hashlib

from prefect.filesystems import LocalFileSystem

from pipeline.settings import Settings, load_settings

__all__ = ["DEVICE_LIMIT", "Settings", "load_settings", "result_storage"]

DEVICE_LIMIT = "whisper-device"  # the global concurrency limit that chunk transcriptions hold


def result_storage(settings: Settings) -> LocalFileSystem:
    """The results folder as a saved LocalFileSystem block (saved once per process)."""
    from prefect.settings import PREFECT_API_URL

    return _saved_storage(str(settings.results_dir.resolve()), PREFECT_API_URL.value())


@functools.lru_cache(maxsize=8)
def _saved_storage(basepath: str, api_url: str | None) -> LocalFileSystem:
    # Prefect wants result storage saved server-side, so that any process handling a retry
    # finds the same folder. One block per folder: its name carries the path's hash. The
    # saved instance, not its slug, goes to the tasks: given a slug, every task run would
    # load the block from the API before it starts.
    name = "podscribe-results-" + hashlib.sha256(basepath.encode()).hexdigest()[:10]
    block = LocalFileSystem(basepath=basepath)
    block.save(name, overwrite=True)
    return block
