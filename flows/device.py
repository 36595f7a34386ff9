"""The device the chunk transcriptions share: a global Prefect concurrency limit, and a lock.

The global limit ("whisper-device") caps how many chunk transcriptions use the device at
once across every flow run and worker. Within one process the chunk tasks that hold a slot
hand their chunks to pipeline.asr.batch's shared micro-batcher, which decodes them together in
batched forward passes on the one loaded model: give the limit at least the batch size in
slots, or batches shrink to the slot count.

Prefect serialises slot acquisitions per limit within a process (one API round trip each,
~0.2 s on a busy 2-core box), so twelve chunk tasks asking one slot each wait seconds before
the first batch can start. ``SlotLender`` asks once for as many slots as tasks are waiting at
that moment, holds them in a helper thread and lends them out locally; a flow run that is
about to start N chunk tasks reserves N at once, before the tasks load the API server.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Hashable, Iterator, Sequence

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound

from flows.settings import DEVICE_LIMIT, DIARIZE_LIMIT


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


class Reservation:
    """Slots kept for users about to come: see ``SlotLender.reserve``."""

    def __init__(self, lender: SlotLender, n: int) -> None:
        self.lender = lender
        self.remaining = n  # users still expected
        self.ahead: set[Hashable] = set()  # slots taken for users by key, not yet claimed

    def take_ahead(self, keys: Sequence[Hashable]) -> list[Hashable]:
        """Take idle reserved slots now, without waiting: one per key, as many as are idle.

        Each is held for the user that later asks for its key's slot (``slot(key)``), which
        then takes no other; work done for a key meanwhile runs on its slot. Returns the keys
        that got one. Closing the reservation gives back those never claimed.
        """
        with self.lender._cond:
            taken = list(keys[: max(0, min(self.remaining, self.lender._free))])
            self.lender._free -= len(taken)
            self.remaining -= len(taken)
            self.ahead.update(taken)
            self.lender._ahead.update(taken)
        return taken

    def cancel(self, n: int = 1) -> None:
        """``n`` of the expected users will not come (e.g. their result was cached)."""
        with self.lender._cond:
            self.remaining = max(0, self.remaining - n)
            self.lender._release_idle()
            self.lender._cond.notify_all()

    def wait(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the acquisition under way; True if none is pending."""
        with self.lender._cond:
            return self.lender._cond.wait_for(lambda: not self.lender._acquiring, timeout_s)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        with self.lender._cond:
            self.remaining = 0  # no more users expected
            unclaimed = self.ahead & self.lender._ahead
            self.lender._ahead -= unclaimed
            self.ahead.clear()
            self.lender._free += len(unclaimed)
            if self in self.lender._reservations:
                self.lender._reservations.remove(self)
            self.lender._release_idle()
            self.lender._cond.notify_all()


class _Group:
    """Slots taken from the limit in one acquisition, held by one helper thread."""

    def __init__(self) -> None:
        self.size = 0
        self.settled = False  # acquired, found nothing to acquire, or failed
        self.error: BaseException | None = None
        self.release = threading.Event()


class SlotLender:
    """Slots of one global concurrency limit, acquired in bulk and lent to local users.

    When a user finds no idle slot here, one acquisition asks for as many slots as users are
    waiting at that moment (at most the limit minus what this process already holds, and no
    more than are free in the limit then, or one if none is: other processes' slots are not
    waited for all at once); users arriving meanwhile wait for it, then take what is left or
    start the next one. A slot a user gives back goes to a local waiter if there is one; a
    group goes back to Prefect as soon as it is idle. The process never holds more slots than
    Prefect granted it, so the global cap holds across processes; a process with a steady
    stream of local users keeps its slots until the stream pauses.
    """

    def __init__(self, name: str, lease_duration_s: float = 300.0) -> None:
        self.name = name
        self.lease_duration_s = lease_duration_s
        self.acquisitions = 0  # successful acquisitions from Prefect (each an API round trip)
        self._cond = threading.Condition()
        self._groups: list[_Group] = []
        self._held = 0  # slots granted to this process
        self._free = 0  # of those, lent to nobody
        self._waiting = 0
        self._reservations: list[Reservation] = []
        self._acquiring = False
        self._capped = False  # holds the whole limit: wait for a slot to come back
        self._ahead: set[Hashable] = set()  # keys holding a slot taken ahead (take_ahead)

    @property
    def held(self) -> int:
        """Slots this process holds now (in use or idle)."""
        with self._cond:
            return self._held

    @contextlib.contextmanager
    def slot(self, key: Hashable | None = None) -> Iterator[None]:
        """Hold one slot of the limit while the block runs: the one taken ahead for ``key``
        (``Reservation.take_ahead``) if there is one, else the next one free."""
        with self._cond:
            claimed = key is not None and key in self._ahead
            if claimed:
                self._ahead.discard(key)
        if not claimed:
            self._take()
        try:
            yield
        finally:
            self._give_back()

    def reserve(self, n: int) -> Reservation:
        """Start acquiring slots for ``n`` users about to come, without waiting for them.

        Idle reserved slots are kept for those users until they come, are cancelled, or the
        reservation is closed (use it as a context manager).
        """
        reservation = Reservation(self, max(0, n))
        with self._cond:
            self._reservations.append(reservation)
            if not self._acquiring and not self._capped and self._wanted() > 0:
                self._start_group()
        return reservation

    def _reserved(self) -> int:
        return sum(r.remaining for r in self._reservations)

    def _wanted(self) -> int:
        """Slots needed beyond the idle ones (lock held). Waiting users may be the reserved
        ones or others: count the larger of the two, not both."""
        return max(self._waiting, self._reserved()) - self._free

    def _take(self) -> None:
        with self._cond:
            self._waiting += 1
            try:
                while not self._free:
                    if self._acquiring or self._capped:
                        self._cond.wait()
                        continue
                    group = self._start_group()
                    self._cond.wait_for(lambda: group.settled)  # noqa: B023 - waited for here
                    if group.error is not None:
                        raise group.error
                self._free -= 1
                for reservation in self._reservations:  # this user was expected
                    if reservation.remaining:
                        reservation.remaining -= 1
                        break
            finally:
                self._waiting -= 1

    def _start_group(self) -> _Group:
        """Start a helper thread that acquires a group of slots (lock held)."""
        self._acquiring = True
        group = _Group()
        # In the caller's context: a bare thread would see Prefect's import-time settings,
        # whose API URL may be unset (podscribe demo sets it later), and talk to an ephemeral
        # server of its own instead of the one the flows use.
        context = contextvars.copy_context()
        threading.Thread(
            target=context.run, args=(self._hold, group), name=f"slots-{self.name}"
        ).start()
        return group

    def _settle(self, group: _Group) -> None:
        group.settled = True
        self._acquiring = False
        self._cond.notify_all()

    def _hold(self, group: _Group) -> None:
        # Not a daemon: at interpreter exit Python joins it, so the slots are given back.
        try:
            limit, active = self._limit()
            with self._cond:
                want = self._wanted()
                if limit is None:
                    size = want
                else:
                    # What this process may still hold, and of it what is free right now:
                    # a partial grant beats waiting until all of it is (one slot if none is).
                    size = min(want, limit - self._held, max(1, limit - active))
                if size <= 0:
                    self._capped = limit is not None and self._held >= limit
                    self._settle(group)
                    return
            with concurrency(self.name, occupy=size, lease_duration=self.lease_duration_s):
                with self._cond:
                    group.size = size
                    self._groups.append(group)
                    self._held += size
                    self._free += size
                    self.acquisitions += 1
                    self._settle(group)
                    self._release_idle()
                group.release.wait()
        except BaseException as exc:  # noqa: BLE001 - handed to the user that started it
            with self._cond:
                if not group.settled:
                    group.error = exc
                    self._settle(group)
            logging.getLogger(__name__).warning("acquiring %s slots failed: %s", self.name, exc)

    def _limit(self) -> tuple[int | None, int]:
        """The limit's slot count now (it may change in the UI; None when the limit is
        missing) and how many of its slots are taken, by any process."""
        with get_client(sync_client=True) as client:
            try:
                limit = client.read_global_concurrency_limit_by_name(self.name)
            except ObjectNotFound:
                return None, 0  # concurrency() then lets everyone through, with a warning
            return limit.limit, limit.active_slots

    def _give_back(self) -> None:
        with self._cond:
            self._free += 1
            self._release_idle()
            self._cond.notify_all()

    def _release_idle(self) -> None:
        """Hand back groups no local user needs (lock held): idle slots beyond the waiters."""
        for group in sorted(self._groups, key=lambda g: g.size):
            if group.size > self._free - max(self._waiting, self._reserved()):
                break
            self._groups.remove(group)
            self._held -= group.size
            self._free -= group.size
            self._capped = False
            group.release.set()


_DEVICE = SlotLender(DEVICE_LIMIT)


@contextlib.contextmanager
def device_slot(key: Hashable | None = None) -> Iterator[None]:
    """Hold one slot of the device limit for one chunk transcription (``key``: the chunk's,
    to use the slot its flow run took for it ahead)."""
    with _DEVICE.slot(key):
        yield


def reserve_device_slots(n: int) -> Reservation:
    """Start acquiring device slots for ``n`` chunk tasks of this process about to start."""
    return _DEVICE.reserve(n)


@contextlib.contextmanager
def diarize_slot() -> Iterator[None]:
    """Hold one slot of the diarize limit (PODSCRIBE_DIARIZE_SLOTS) while an episode is
    diarized: each diarization holds the whole episode in memory. A plain acquisition, one
    per task: there are few diarize tasks, and each runs for minutes."""
    with concurrency(DIARIZE_LIMIT, occupy=1):
        yield
