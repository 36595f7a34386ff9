"""One task per chunk, batched all the same: concurrent ``submit`` calls within a short window
are decoded together by one worker thread over ``BatchTranscriber`` (``pipeline.asr.batch``).

A Prefect flow runs one task per chunk (each a retryable, cacheable unit in the UI); on a CPU or
a GPU, decoding them one by one would forgo batching. The tasks of a process submit their chunk
to the process-wide ``shared_batcher()`` and wait for its future.
"""

from __future__ import annotations

import functools
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

from pipeline.asr.batch import DEFAULT_CPU_BATCH, BatchTranscriber, ChunkState
from pipeline.asr.options import TranscribeOptions
from pipeline.asr.transcribe import silent_chunk_transcript
from pipeline.core.errors import TranscriptionError
from pipeline.core.types import Chunk, ChunkTranscript


@dataclass
class _Request:
    chunk: Chunk
    options: TranscribeOptions
    future: Future
    ahead: bool = False  # handed over by submit_ahead: no caller to wait for behind it


class MicroBatcher:
    """Groups chunks that concurrent callers submit into batches, decoded by one worker thread.

    ``submit`` returns at once with a future; requests that arrive within ``max_wait_s`` of the
    first waiting one are decoded together (up to the options' batch size). Requests with
    different options never share a batch. Use one per process (``shared_batcher``).

    A caller that knows more requests are on their way says so with ``expect``: while the
    worker is idle, a batch that is not full waits for announced requests (until they arrive,
    are withdrawn or their announcement expires) rather than guessing with ``max_wait_s``.
    One that already holds the chunks hands the first batch over with ``submit_ahead``.
    """

    def __init__(self, max_wait_s: float = 0.05) -> None:
        self.max_wait_s = max_wait_s
        self._requests: queue.Queue[_Request | None] = queue.Queue()
        self._engines: dict[TranscribeOptions, BatchTranscriber] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.encoded_ahead = 0  # windows encoded while waiting for announced chunks
        self._ahead: dict[tuple[str, str, TranscribeOptions], Future[ChunkTranscript]] = {}
        self.claimed_ahead = 0  # submissions answered with a future made by submit_ahead
        self._announced: deque[list[float]] = deque()  # [requests still due, deadline]
        self.batch_sizes: deque[int] = deque(maxlen=64)  # of the latest batches, newest last
        self._worker = threading.Thread(target=self._run, name="podscribe-batcher", daemon=True)
        self._worker.start()

    def submit(self, chunk: Chunk, options: TranscribeOptions) -> Future[ChunkTranscript]:
        """Queue one chunk; the future holds its ``ChunkTranscript`` (or the error).

        A chunk queued ahead (``submit_ahead``) with the same options is not queued again:
        its caller gets the future made then.
        """
        with self._lock:
            ahead = self._ahead.pop(_ahead_key(chunk, options), None)
            if ahead is not None:
                self.claimed_ahead += 1
                return ahead
            if self._closed:
                raise TranscriptionError("the micro-batcher is closed")
            future: Future[ChunkTranscript] = Future()
            self._consume_announced(1)
            self._requests.put(_Request(chunk, options, future))
        return future

    def submit_ahead(self, chunks: Sequence[Chunk], options: TranscribeOptions) -> None:
        """Start on chunks whose callers are still on their way (a batch's worth: see
        ``batch_size``). Their callers ``submit`` them later and get these futures, so the
        worker need not wait for them (a flow's chunk tasks take a few hundred ms to start);
        ``drop_ahead`` forgets the ones nobody came for."""
        with self._lock:
            if self._closed:
                raise TranscriptionError("the micro-batcher is closed")
            for chunk in chunks:
                future: Future[ChunkTranscript] = Future()
                self._ahead[_ahead_key(chunk, options)] = future
                self._requests.put(_Request(chunk, options, future, ahead=True))

    @staticmethod
    def batch_size(options: TranscribeOptions) -> int:
        """How many requests the worker gathers into one batch: the configured batch size,
        else the CPU default (an automatic GPU batch grows from there as more queue up)."""
        return max(1, options.batch_size or DEFAULT_CPU_BATCH)

    def drop_ahead(self, chunks: Sequence[Chunk], options: TranscribeOptions) -> int:
        """Forget chunks queued ahead that no caller claimed (cancelled if not yet started);
        returns how many there were."""
        with self._lock:
            futures = [self._ahead.pop(_ahead_key(c, options), None) for c in chunks]
        dropped = [f for f in futures if f is not None]
        for future in dropped:
            future.cancel()
        return len(dropped)

    def expect(self, n: int, within_s: float = 5.0) -> None:
        """Announce ``n`` more submissions due within ``within_s`` seconds."""
        if n > 0:
            with self._lock:
                self._announced.append([float(n), time.perf_counter() + within_s])

    def withdraw(self, n: int = 1) -> None:
        """Take back ``n`` announced submissions that will not come (their caller failed)."""
        with self._lock:
            self._consume_announced(n)

    def abandon(self, chunk: Chunk, options: TranscribeOptions) -> None:
        """The caller of ``chunk`` will not submit it (it failed first): drop the chunk if it
        was queued ahead, else take back one announced submission."""
        if not self.drop_ahead([chunk], options):
            self.withdraw(1)

    def announced(self) -> int:
        """Announced submissions still due (not yet submitted, withdrawn or expired)."""
        with self._lock:
            self._expire_announced()
            return int(sum(count for count, _ in self._announced))

    def _consume_announced(self, n: int) -> None:
        """Count ``n`` announced submissions as come, oldest announcement first (lock held)."""
        self._expire_announced()
        while n > 0 and self._announced:
            taken = min(n, int(self._announced[0][0]))
            self._announced[0][0] -= taken
            n -= taken
            if self._announced[0][0] <= 0:
                self._announced.popleft()

    def _expire_announced(self) -> None:
        now = time.perf_counter()
        for entry in [e for e in self._announced if e[1] <= now]:
            self._announced.remove(entry)

    def _announced_wait(self) -> float:
        """How long to wait for the next announced submission: until the first announcement
        still due expires, re-checked every 50 ms (a withdrawal does not wake the worker)."""
        with self._lock:
            self._expire_announced()
            if not self._announced:
                return 0.0
            deadline = min(d for _, d in self._announced)
        return max(0.0, min(0.05, deadline - time.perf_counter()))

    def close(self) -> None:
        """Finish what was submitted, then stop the worker."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._requests.put(None)
        self._worker.join()

    def __enter__(self) -> MicroBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- worker ------------------------------------------------------------------------

    def _engine(self, options: TranscribeOptions) -> BatchTranscriber:
        if options not in self._engines:
            self._engines[options] = BatchTranscriber(options)  # models caches loaded weights
        return self._engines[options]

    def _gather(self, block: bool, admit: Callable[[_Request, bool], None]) -> bool:
        """Hand new requests to ``admit``; returns True once the stop marker came.

        If ``block`` (the worker is idle): wait for one, then for more until max_wait_s passes
        (not after chunks handed over ahead) and for as long as announced ones are due;
        otherwise take the queued ones without waiting. Requests are admitted before each
        wait (so the wait can be spent on them: ``admit``'s second argument is True) and
        before returning, never between taking queued ones."""
        taken = 0
        unadmitted: deque[_Request] = deque()
        stop = False
        deadline = None

        def done(waiting: bool = False) -> bool:
            while unadmitted:
                admit(unadmitted.popleft(), waiting)
            return stop

        while True:
            timeout = None if block and not taken else 0.0
            if deadline is not None:
                timeout = max(0.0, deadline - time.perf_counter())
                if block and not timeout:
                    timeout = self._announced_wait()
            if timeout != 0.0 and unadmitted:
                if self._requests.empty():
                    done(waiting=True)  # about to wait: admit what came first, look again
                    continue
                timeout = 0.0  # more is queued already (a group handed over ahead): take it
            try:
                item = (
                    self._requests.get(timeout=timeout)
                    if timeout != 0.0
                    else (self._requests.get_nowait())
                )
            except queue.Empty:
                if deadline is not None and block and self._announced_wait():
                    continue
                return done()
            if item is None:
                stop = True
                return done()
            taken += 1
            unadmitted.append(item)
            if deadline is None and block:  # with work pending, take what is queued, no wait
                # Chunks handed over ahead came as a group: wait for announced ones only.
                deadline = time.perf_counter() + (0.0 if item.ahead else self.max_wait_s)
            if taken >= self.batch_size(item.options):
                return done()

    def _run(self) -> None:
        pending: dict[TranscribeOptions, deque[ChunkState]] = {}
        stopping = False
        while True:
            idle = not any(pending.values())
            if not stopping:
                stopping = self._gather(
                    block=idle,
                    admit=functools.partial(self._admit, pending=pending, encode_ahead=idle),
                )
            if not any(pending.values()):
                if stopping:
                    return
                continue
            options = next(o for o, q in pending.items() if q)
            self._step(self._engines[options], pending[options])

    def _admit(
        self,
        req: _Request,
        waiting: bool,
        pending: dict[TranscribeOptions, deque[ChunkState]],
        encode_ahead: bool,
    ) -> None:
        """Start a request's chunk as it arrives; while an idle worker on a CPU is about to
        wait for announced chunks to fill the batch (``waiting``), also run this one's first
        window through the encoder (the wait then costs nothing)."""
        if not req.future.set_running_or_notify_cancel():
            return
        try:
            engine = self._engine(req.options)
            silent = silent_chunk_transcript(req.chunk, req.options, engine.loaded)
            if silent is not None:  # nothing to hear: no window to decode
                req.future.set_result(silent)
                return
            state = engine.start(req.chunk, req.future)
            if encode_ahead and waiting and engine.loaded.device == "cpu" and self.announced():
                engine.encode_ahead(state)
                self.encoded_ahead += 1
        except Exception as exc:  # noqa: BLE001 - handed to the caller's future
            req.future.set_exception(exc)
            return
        pending.setdefault(req.options, deque()).append(state)

    def _step(self, engine: BatchTranscriber, pending: deque[ChunkState]) -> None:
        batch = engine.next_batch(pending)
        self.batch_sizes.append(len(batch))
        try:
            engine.run_batch(batch)
        except Exception as exc:  # noqa: BLE001 - every caller in the batch gets the error
            for state in batch:
                assert state.future is not None
                state.future.set_exception(
                    TranscriptionError(
                        f"Whisper failed on chunk {state.chunk.number} ({state.chunk.path.name}): "
                        f"{exc}"
                    )
                )
            return
        for state in batch:
            assert state.future is not None
            if state.done:
                try:
                    state.future.set_result(engine.finish(state))
                except Exception as exc:  # noqa: BLE001
                    state.future.set_exception(exc)
            else:
                pending.appendleft(state)


def _ahead_key(chunk: Chunk, options: TranscribeOptions) -> tuple[str, str, TranscribeOptions]:
    return str(chunk.path), chunk.sha256, options


_SHARED: MicroBatcher | None = None
_SHARED_LOCK = threading.Lock()


def shared_batcher(max_wait_s: float = 0.05) -> MicroBatcher:
    """The process-wide micro-batcher (made on first use): one task per chunk calls
    ``shared_batcher().submit(chunk, options).result()``."""
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = MicroBatcher(max_wait_s=max_wait_s)
        return _SHARED
