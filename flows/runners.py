"""The task runner of the episode flows, chosen by PODSCRIBE_TASK_RUNNER (threads or dask)."""

from __future__ import annotations

from typing import Any

from prefect.task_runners import ThreadPoolTaskRunner

from flows.settings import Settings


def make_task_runner(settings: Settings) -> Any:
    """Threads in the flow run's process (one shared model), or a Dask cluster.

    With "dask" and no PODSCRIBE_DASK_ADDRESS each flow run starts a LocalCluster of
    PODSCRIBE_DASK_WORKERS worker processes of PODSCRIBE_WORKERS threads (each process loads
    the model once and batches its chunks).
    """
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if settings.dask_address:
            return DaskTaskRunner(address=settings.dask_address)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": settings.dask_workers,
                "threads_per_worker": settings.workers,
                "processes": True,
                "dashboard_address": None,
            }
        )
    return ThreadPoolTaskRunner(max_workers=settings.workers)
