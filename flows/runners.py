"""The task runner of the episode flows, chosen by PODSCRIBE_TASK_RUNNER (threads or dask) when
a flow run starts, not when the flows are imported."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Self

from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from flows.settings import Settings, load_settings


def make_task_runner(settings: Settings) -> TaskRunner[Any]:
    """Threads in the flow run's process (one shared model), or a Dask cluster.

    With "dask" and no PODSCRIBE_DASK_ADDRESS each flow run starts a LocalCluster of
    PODSCRIBE_DASK_WORKERS worker processes of PODSCRIBE_WORKERS threads (each process loads
    the model once and batches its chunks).
    """
    if settings.task_runner == "dask":
        from prefect_dask import DaskTaskRunner  # the "dask" extra

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


class SettingsTaskRunner(TaskRunner[PrefectFuture[Any]]):
    """The runner ``make_task_runner`` picks from the settings read as the flow run starts
    (Prefect enters a flow's task runner at the start of each run), so a worker or a test that
    sets ``PODSCRIBE_TASK_RUNNER`` after import is obeyed."""

    def __init__(self) -> None:
        super().__init__()
        self._inner: TaskRunner[Any] | None = None

    def duplicate(self) -> Self:
        return type(self)()

    def __enter__(self) -> Self:
        self._inner = make_task_runner(load_settings())
        self._inner.__enter__()
        super().__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._inner is not None:
                self._inner.__exit__(*exc)
        finally:
            self._inner = None
            super().__exit__(*exc)

    def submit(
        self,
        task: Any,
        parameters: dict[str, Any],
        wait_for: Iterable[PrefectFuture[Any]] | None = None,
        dependencies: dict[str, set[Any]] | None = None,
    ) -> PrefectFuture[Any]:
        if self._inner is None:
            raise RuntimeError("the task runner must be started before submitting work")
        return self._inner.submit(task, parameters, wait_for, dependencies)
