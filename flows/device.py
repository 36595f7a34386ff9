"""The device the chunk transcriptions share: a global Prefect concurrency limit, and a lock.

The global limit ("whisper-device") caps how many chunk transcriptions use the device at
once across every flow run and worker. Within one process the chunk tasks that hold a slot
hand their chunks to pipeline.batch's shared micro-batcher, which decodes them together in
batched forward passes on the one loaded model: give the limit at least the batch size in
slots, or batches shrink to the slot count.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from flows.settings import DEVICE_LIMIT


def ensure_device_limit(slots: int, name: str = DEVICE_LIMIT) -> int:
    """Create the global concurrency limit with ``slots`` if missing; return its slot count.

    An existing limit is left as it is: someone may have changed it in the UI on purpose.
    """
    with get_client(sync_client=True) as client:
        try:
            return client.read_global_concurrency_limit_by_name(name).limit
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=slots)
            )
            return slots


@contextlib.contextmanager
def device_slot() -> Iterator[None]:
    """Hold one slot of the device limit for one chunk transcription."""
    with concurrency(DEVICE_LIMIT, occupy=1):
        yield
