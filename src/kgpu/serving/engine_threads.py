"""The threads that run the engine: the first may spread a call over every core, the others use one core each.

Why it matters on CPUs: PyTorch's parallel operations run on GNU OpenMP, which gives every thread that
starts a parallel region its own team of helper threads. While the helpers it manages number no more than
the cores, a helper spins for a moment after each operation and the next one starts at once; with more,
libgomp spins only about a hundred times and then sleeps, and every one of the hundred-odd operations of a
forward pass then waits for a sleeping helper to be woken. A model loaded on one thread and computed on
two others took 1.4-1.9x as long per request as on one thread, with about 220 context switches per
request against 9 (`bench/engine_threads.py`, 2 cores).

So every call that may use more than one core (loading, warming up, a batch alone) runs on the primary
thread, the only one that ever has helpers, and the others run single-threaded: batches side by side
then share the cores one thread each, and the helper count stays within the cores.

Spinning has a price of its own: libgomp's default (300,000 spins, milliseconds) keeps a helper busy
long after a forward pass ends, and when several replicas share the cores their helpers spin on the
cores the others need: two replicas on 2 cores, each serving one request at a time, answered in
85-540 ms instead of 25 ms (`bench/shared_cores.py`). ``spin_briefly`` sets 1,000 spins, enough to
carry a helper from one operation to the next within a pass; a lone replica may lose up to about
1.5 ms a request to it, and ``GOMP_SPINCOUNT`` set by the user is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

_local = threading.local()

SPIN_COUNT = "1000"  # libgomp spins before a waiting helper sleeps (its default: 300000)


def spin_briefly() -> None:
    """Set libgomp's spin count for this process, unless the user chose a wait policy.

    libgomp reads its settings once, when PyTorch loads it: call this before importing torch.
    """
    if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
        os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT


def may_fan_out() -> bool:
    """Whether a call in this thread may use several cores: everywhere but a secondary engine thread."""
    return getattr(_local, "fan_out", True)


def _mark(fan_out: bool) -> None:
    _local.fan_out = fan_out


class EngineThreads:
    """Single-thread executors; a call runs on the least busy one, the primary (index 0) first on ties."""

    def __init__(self, count: int = 1) -> None:
        self._executors: list[ThreadPoolExecutor] = []
        self._running: list[int] = []  # calls handed to each thread and not finished
        self.grow(count)

    def grow(self, count: int) -> None:
        """Have at least ``count`` threads (the first is the primary)."""
        while len(self._executors) < count:
            index = len(self._executors)
            self._executors.append(
                ThreadPoolExecutor(
                    max_workers=1,
                    thread_name_prefix=f"kgpu-engine-{index}",
                    initializer=_mark,
                    initargs=(index == 0,),
                )
            )
            self._running.append(0)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        index = min(range(len(self._running)), key=lambda i: (self._running[i], i))
        self._running[index] += 1
        future = self._executors[index].submit(fn, *args)
        # Counted until the thread is done, even when the caller stops waiting earlier.
        future.add_done_callback(functools.partial(self._finished, loop, index))
        return await asyncio.wrap_future(future)

    def _finished(self, loop: asyncio.AbstractEventLoop, index: int, _: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody counts any more
            loop.call_soon_threadsafe(self._decrement, index)

    def _decrement(self, index: int) -> None:
        self._running[index] -= 1

    def shutdown(self) -> None:
        for executor in self._executors:
            executor.shutdown(wait=False, cancel_futures=True)
