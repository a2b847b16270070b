"""The order in which requests waiting at the gateway get a replica: earliest deadline first,
requests that can no longer meet their deadline last.

A burst that outruns the replicas ready for it makes some requests late whatever the order.
First-in-first-out spreads that lateness over everyone queued behind the burst; serving the
request whose deadline is nearest first keeps most of them on time, and moving a request whose
deadline has already passed behind every one that can still make it stops a few hopeless
requests from making the rest late too (plain EDF's "domino effect" under overload). Late
requests are still served, oldest deadline first, as soon as nothing on time is waiting.

Requests without a deadline of their own get ``arrival + default`` (the hold timeout), so a
queue of such requests is first in first out. Waiting longer than the hold timeout ends the
wait (``expire``) in any case.

Pure data structure with no clock of its own and no I/O: the gateway's router and the
simulator's replay use the same one.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(order=True)
class _Entry(Generic[T]):
    deadline: float
    seq: int
    arrival: float = field(compare=False)
    item: T = field(compare=False)
    gone: bool = field(default=False, compare=False)


class DeadlineQueue(Generic[T]):
    def __init__(self) -> None:
        self._on_time: list[_Entry[T]] = []  # heap by deadline
        self._late: list[_Entry[T]] = []  # heap by deadline: passed, served when nothing else waits
        # For expiry, in arrival order; _take keeps its front an entry still waiting.
        self._by_arrival: deque[_Entry[T]] = deque()
        self._seq = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, item: T, arrival: float, deadline: float) -> _Entry[T]:
        """Queue ``item``; the returned handle can ``discard`` it. Arrivals must not decrease."""
        entry = _Entry(deadline, next(self._seq), arrival, item)
        heapq.heappush(self._on_time, entry)
        self._by_arrival.append(entry)
        self._size += 1
        return entry

    def pop(self, now: float) -> T:
        """The next request to serve at ``now``; IndexError when empty."""
        while self._on_time:
            entry = self._on_time[0]
            if entry.gone:
                heapq.heappop(self._on_time)
            elif entry.deadline < now:
                heapq.heappush(self._late, heapq.heappop(self._on_time))
            else:
                break
        for heap in (self._on_time, self._late):
            while heap:
                entry = heapq.heappop(heap)
                if not entry.gone:
                    return self._take(entry)
        raise IndexError("pop from an empty DeadlineQueue")

    def discard(self, handle: _Entry[T]) -> bool:
        """Take a request out (its wait ended some other way); False if it was no longer waiting."""
        if handle.gone:
            return False
        self._take(handle)
        return True

    def waiting(self) -> list[tuple[T, float]]:
        """Every waiting request with its deadline, in arrival order (what an autoscaler may size for)."""
        return [(e.item, e.deadline) for e in self._by_arrival if not e.gone]

    def oldest_arrival(self) -> float | None:
        return self._by_arrival[0].arrival if self._by_arrival else None

    def expire(self, arrived_by: float) -> list[T]:
        """Take out every request that arrived at or before ``arrived_by`` (waited too long)."""
        expired = []
        while self._by_arrival and self._by_arrival[0].arrival <= arrived_by:
            expired.append(self._take(self._by_arrival[0]))
        return expired

    def _take(self, entry: _Entry[T]) -> T:
        entry.gone = True
        self._size -= 1
        if self._size == 0:
            # Served and discarded entries are dropped lazily; an empty queue drops them all,
            # so a long-lived queue holds no more than one busy period's worth of them.
            self._on_time.clear()
            self._late.clear()
            self._by_arrival.clear()
        else:
            self._drop_gone_front()
        return entry.item

    def _drop_gone_front(self) -> None:
        while self._by_arrival and self._by_arrival[0].gone:
            self._by_arrival.popleft()
