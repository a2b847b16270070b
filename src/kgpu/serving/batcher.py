"""Dynamic batching: group whatever requests are queued into one engine call, bounded by a token budget.

There is no wait timer (as in TEI and Triton's default): the moment an engine worker is free, the scheduler
takes as many queued sequences as fit `max_batch_tokens` (padded: sequences x longest) and `max_batch_size`.
Under light load a request runs alone at once; under heavy load batches fill up while the previous batches
compute, which is exactly when batching pays. The engine runs in dedicated worker threads so the event loop
keeps accepting, tokenizing and answering requests meanwhile. With several workers (Triton's instance count)
that many batches compute at once: on CPUs, a few batches side by side get more from the cores than one
batch spread over all of them (bench/README.md); a backlog is then shared out over them rather than taken
whole by the first worker free (``_share``).

When nothing waits and a worker is free, `prepare_and_embed` hands a request's tokenization and its forward
pass to that worker as one job: a request alone skips the hand-off to the tokenizer threads and back, which
costs about 0.2 ms on a 2-core machine (a thread waking up), a tenth of a concurrency-1 budget of 2 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np

from kgpu.serving.engine_threads import EngineThreads

log = logging.getLogger(__name__)

T = TypeVar("T")

SPLIT_FROM = 64  # sequences: a worker's share of a backlog is never cut below this (DynamicBatcher._share)


class QueueFullError(RuntimeError):
    """The request queue is at max_queue requests; the client should retry later."""


class BatcherClosedError(RuntimeError):
    """The batcher is not running (not started yet, or stopping)."""


class Engine(Protocol):
    @property
    def dim(self) -> int: ...

    def embed(self, batch: Sequence[Sequence[int]]) -> np.ndarray: ...


@dataclass(frozen=True)
class BatchStats:
    size: int  # sequences in the batch
    tokens: int  # real tokens
    padded_tokens: int  # size x longest: what the budget limits
    compute_seconds: float
    queue_seconds: list[float] = field(default_factory=list)  # one per request whose first sequence ran here


class _Request:
    __slots__ = ("enqueued_at", "future", "next_index", "remaining", "result", "sequences")

    def __init__(
        self, sequences: Sequence[Sequence[int]], future: asyncio.Future[np.ndarray], dim: int
    ) -> None:
        self.sequences = sequences
        self.future = future
        self.enqueued_at = time.perf_counter()
        self.next_index = 0  # first sequence not yet handed to a batch
        self.remaining = len(sequences)  # sequences without a result yet
        self.result = np.empty((len(sequences), dim), dtype=np.float32)


class DynamicBatcher:
    def __init__(
        self,
        engine: Engine,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 256,
        max_queue: int = 1024,
        on_batch: Callable[[BatchStats], None] | None = None,
        workers: int = 1,
        threads: EngineThreads | None = None,
    ) -> None:
        """``workers`` batches compute at once, each in its own thread: those of ``threads`` (the ones
        the engine was loaded on; grown to ``workers``), else new ones. The batcher shuts them down."""
        if min(max_batch_tokens, max_batch_size, max_queue, workers) < 1:
            raise ValueError("max_batch_tokens, max_batch_size, max_queue and workers must all be >= 1")
        self._engine = engine
        self._max_batch_tokens = max_batch_tokens
        self._max_batch_size = max_batch_size
        self._max_queue = max_queue
        self._on_batch = on_batch
        self._workers = workers
        self._queue: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._computing: set[asyncio.Task[None]] = set()  # batches handed to the workers
        self._threads = threads or EngineThreads()
        self._closing = False

    @property
    def depth(self) -> int:
        """Requests waiting for (more of) their sequences to be scheduled."""
        return len(self._queue)

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def running(self) -> bool:
        return self._task is not None and not self._closing

    async def start(self) -> None:
        if self._task is not None:
            return
        self._threads.grow(self._workers)
        self._task = asyncio.create_task(self._schedule(), name="kgpu-batcher")

    async def stop(self, timeout: float | None = None) -> None:
        """Refuse new work, finish everything queued (up to `timeout` seconds), then stop the worker."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), timeout)
        except asyncio.TimeoutError:
            log.warning("batcher drain timed out after %ss; failing %d queued requests", timeout, self.depth)
            self._task.cancel()
            for computing in list(self._computing):  # their requests fail with the queued ones
                computing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(self._task, *self._computing, return_exceptions=True)
            self._fail_queued(BatcherClosedError("server is shutting down"))
        finally:
            self._threads.shutdown()

    async def submit(self, ids: Sequence[Sequence[int]]) -> np.ndarray:
        """Embeddings (len(ids), dim) in the order given; the sequences may be computed in several batches."""
        if not self.running:
            raise BatcherClosedError("the model is not serving (starting up or shutting down)")
        if not ids:
            return np.empty((0, self._engine.dim), dtype=np.float32)
        if len(self._queue) >= self._max_queue:
            raise QueueFullError(f"request queue is full ({self._max_queue} requests waiting)")
        request = _Request(ids, asyncio.get_running_loop().create_future(), self._engine.dim)
        self._queue.append(request)
        self._wake.set()
        # If the caller is cancelled, awaiting cancels the future too; the scheduler then skips it.
        return await request.future

    async def prepare_and_embed(
        self, prepare: Callable[[], list[list[int]]], count: int, longest: int
    ) -> tuple[list[list[int]], np.ndarray] | None:
        """Run ``prepare`` (tokenize) and embed its sequences in one worker call, if that can start now.

        It can when nothing is queued (so no request is overtaken), a worker is free and the ``count``
        sequences, each at most ``longest`` tokens, fit one batch. Otherwise returns None at once and the
        caller prepares and submits as usual. Returns the prepared sequences and their embeddings.
        """
        if not self.running or self._queue or len(self._computing) >= self._workers:
            return None
        if not 0 < count <= self._max_batch_size or count * longest > self._max_batch_tokens:
            return None
        future: asyncio.Future[tuple[list[list[int]], np.ndarray]] = (
            asyncio.get_running_loop().create_future()
        )
        self._start_computing(self._compute_alone(prepare, future))
        return await future

    async def _compute_alone(
        self,
        prepare: Callable[[], list[list[int]]],
        future: asyncio.Future[tuple[list[list[int]], np.ndarray]],
    ) -> None:
        def job() -> tuple[list[list[int]], np.ndarray]:
            sequences = prepare()
            return sequences, self._engine.embed(sequences)

        def fail(exc: BaseException) -> None:
            if not future.done():  # the client may have gone away meanwhile
                future.set_exception(exc)

        started = time.perf_counter()
        done = await self._on_engine_thread(job, fail, "a request computed alone")
        if done is None:
            return
        if not future.done():
            future.set_result(done)
        # The compute time here includes the tokenization; it never waited in the queue.
        self._report(done[0], time.perf_counter() - started, [0.0])

    async def _schedule(self) -> None:
        while True:
            if self._queue and len(self._computing) < self._workers:
                batch, queue_seconds = self._take_batch(self._share())
                if batch:  # empty when everything at the head had been cancelled
                    self._start_computing(self._compute(batch, queue_seconds))
                continue
            if self._closing and not self._queue and not self._computing:
                return
            self._wake.clear()
            await self._wake.wait()  # a new request, or a worker freed

    def _start_computing(self, work: Coroutine[None, None, None]) -> None:
        """Count ``work`` against the workers until it ends; its end wakes the scheduler."""
        task = asyncio.create_task(work)
        self._computing.add(task)
        task.add_done_callback(self._computed)

    def _computed(self, task: asyncio.Task[None]) -> None:
        self._computing.discard(task)
        self._wake.set()

    async def _on_engine_thread(
        self, job: Callable[[], T], fail: Callable[[BaseException], None], what: str
    ) -> T | None:
        """``job`` on an engine thread; a failure goes to ``fail`` (and None back), never to the loop."""
        try:
            return await self._threads.run(job)
        except asyncio.CancelledError:  # stop() timed out
            fail(BatcherClosedError("server is shutting down"))
            raise
        except Exception as exc:
            log.exception("%s failed", what)
            fail(exc)
            return None

    async def _compute(self, batch: list[tuple[_Request, int]], queue_seconds: list[float]) -> None:
        sequences = [request.sequences[index] for request, index in batch]
        started = time.perf_counter()
        vectors = await self._on_engine_thread(
            functools.partial(self._engine.embed, sequences),
            functools.partial(self._fail_batch, batch),
            f"batch of {len(sequences)} sequences",
        )
        if vectors is None:
            return
        compute_seconds = time.perf_counter() - started
        self._deliver(batch, vectors)
        self._report(sequences, compute_seconds, queue_seconds)

    def _share(self) -> int:
        """The most sequences the next batch may take: with several workers, no more than its share of a backlog.

        A worker that took the whole queue (up to the budget) held every request in it for as long as
        the batch computes, which on CPUs grows with its size, while the other workers went on with
        small batches of what arrived later: at concurrency 256 the p90 was 2.3x the p50. A backlog is
        split over the workers instead, but never into batches under SPLIT_FROM sequences: on a 2-core
        CPU the engine computed 5-8 % fewer sequences per second in batches of 32 than of 64.
        """
        if self._workers == 1:
            return self._max_batch_size
        queued = sum(len(request.sequences) - request.next_index for request in self._queue)
        return min(self._max_batch_size, max(SPLIT_FROM, -(-queued // self._workers)))

    def _take_batch(self, max_size: int) -> tuple[list[tuple[_Request, int]], list[float]]:
        """FIFO over queued sequences while the padded size fits, up to ``max_size``; at least one."""
        batch: list[tuple[_Request, int]] = []
        queue_seconds: list[float] = []
        longest = 0
        now = time.perf_counter()
        while self._queue and len(batch) < max_size:
            request = self._queue[0]
            if request.future.done():  # client went away
                self._queue.popleft()
                continue
            length = len(request.sequences[request.next_index])
            grown = max(longest, length)
            if batch and (len(batch) + 1) * grown > self._max_batch_tokens:
                break
            if request.next_index == 0:
                queue_seconds.append(now - request.enqueued_at)
            batch.append((request, request.next_index))
            longest = grown
            request.next_index += 1
            if request.next_index == len(request.sequences):
                self._queue.popleft()
        return batch, queue_seconds

    @staticmethod
    def _deliver(batch: list[tuple[_Request, int]], vectors: np.ndarray) -> None:
        for row, (request, index) in enumerate(batch):
            request.result[index] = vectors[row]
            request.remaining -= 1
            if request.remaining == 0 and not request.future.done():
                request.future.set_result(request.result)

    def _report(
        self, sequences: list[Sequence[int]], compute_seconds: float, queue_seconds: list[float]
    ) -> None:
        if self._on_batch is None:
            return
        lengths = [len(s) for s in sequences]
        stats = BatchStats(
            len(lengths), sum(lengths), len(lengths) * max(lengths), compute_seconds, queue_seconds
        )
        try:
            self._on_batch(stats)
        except Exception:  # metrics must never stop serving
            log.exception("batch metrics callback failed")

    def _fail_batch(self, batch: list[tuple[_Request, int]], exc: BaseException) -> None:
        for request in {id(r): r for r, _ in batch}.values():
            self._fail(request, exc)

    def _fail(self, request: _Request, exc: BaseException) -> None:
        if not request.future.done():
            request.future.set_exception(exc)
        with contextlib.suppress(ValueError):
            self._queue.remove(request)

    def _fail_queued(self, exc: BaseException) -> None:
        while self._queue:
            request = self._queue.popleft()
            if not request.future.done():
                request.future.set_exception(exc)
