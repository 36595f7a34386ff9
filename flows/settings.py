"""Environment settings of the flows, read in one place (PODSCRIBE_* variables).

Read when a flow run starts (not at import), so a worker, a test or the demo can point the
flows at other folders by setting variables before running them.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from prefect.filesystems import LocalFileSystem

DEVICE_LIMIT = "whisper-device"  # the global concurrency limit that chunk transcriptions hold


class FlowSettings(BaseSettings):
    """Where the flows keep things and how they run chunk tasks."""

    model_config = SettingsConfigDict(env_prefix="PODSCRIBE_", extra="ignore")

    # Persisted chunk results: a Retry reads finished chunks from here. In docker-compose this
    # must be a volume shared by everything that runs flows.
    results_dir: Path = Path("results")
    audio_root: Path = Path("audio")
    transcripts_root: Path = Path("transcripts")
    db: Path = Path("transcripts/podscribe.db")  # the feed/episode catalog
    # "threads": chunk tasks share one process (and its model); "dask": a Dask cluster.
    task_runner: Literal["threads", "dask"] = "threads"
    # An existing Dask scheduler ("tcp://host:8786"); none starts a LocalCluster per flow run.
    dask_address: str | None = None
    # Slots of the global "whisper-device" limit, created when missing: how many chunk
    # transcriptions may hold the device at once across all flow runs. A slot is held while
    # the chunk waits in the micro-batcher's queue as well as while it is decoded, so the
    # default is twice TranscribeOptions.batch_size (8): the next batch's chunks queue while
    # one runs.
    device_slots: int = Field(default=16, ge=1)
    # Chunk tasks at once per flow run (threads feeding the micro-batcher); like the slots,
    # twice the batch size, so that the batcher never idles waiting for a thread to free.
    workers: int = Field(default=16, ge=1)
    # Worker processes of the LocalCluster a "dask" flow run starts (each loads the model).
    dask_workers: int = Field(default=2, ge=1)

    def result_storage(self) -> LocalFileSystem:
        """The results folder as a saved LocalFileSystem block (saved once per process)."""
        from prefect.settings import PREFECT_API_URL

        return _saved_storage(str(self.results_dir.resolve()), PREFECT_API_URL.value())


@functools.lru_cache(maxsize=8)
def _saved_storage(basepath: str, api_url: str | None) -> LocalFileSystem:
    # Prefect wants result storage saved server-side, so that any process handling a retry
    # finds the same folder. One block per folder: its name carries the path's hash. The
    # saved instance, not its slug, goes to the tasks: given a slug, every task run would
    # load the block from the API before it starts.
    from prefect.filesystems import LocalFileSystem

    name = "podscribe-results-" + hashlib.sha256(basepath.encode()).hexdigest()[:10]
    block = LocalFileSystem(basepath=basepath)
    block.save(name, overwrite=True)
    return block


def load_settings() -> FlowSettings:
    """The settings from the environment, now."""
    return FlowSettings()
