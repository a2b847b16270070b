"""In-process watch: the store's committed changes fanned out to server-sent-event streams.

The bus keeps the most recent changes so a client can resume "after resourceVersion N"
(from a list, or from the last event it saw). A version older than what the bus still
holds gets `WatchExpired` (HTTP 410 Gone), and the client lists again, as with the
Kubernetes API server. Changes are published from the store's writer threads and consumed
on the event loop, hence the thread-safe hand-over.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from kgpu.controlplane.store import Change

# A watcher that falls this far behind is cut off (it resumes from its last version or relists).
MAX_PENDING_PER_WATCHER = 10_000


class WatchExpired(Exception):
    """The requested resourceVersion is older than the changes the bus still holds."""


@dataclass
class Subscription:
    matches: Callable[[Change], bool]
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    overflowed: bool = False

    def _deliver(self, change: Change) -> None:  # runs on the subscriber's loop
        if self.overflowed:
            return
        if self.queue.qsize() >= MAX_PENDING_PER_WATCHER:
            self.overflowed = True
            self.queue.put_nowait(None)  # wakes the stream so it can end with an error
            return
        self.queue.put_nowait(change)


class WatchBus:
    def __init__(self, start_revision: int, history: int = 4096) -> None:
        self._lock = threading.Lock()
        self._history: deque[Change] = deque(maxlen=history)
        # Every change after `_floor` is still in `_history`: a watch can start at any version >= it.
        self._floor = start_revision
        self._subscribers: list[Subscription] = []

    def publish(self, change: Change) -> None:
        """Called by the store after each committed write, in revision order."""
        with self._lock:
            if len(self._history) == self._history.maxlen:
                self._floor = self._history[0].resource.resource_version
            self._history.append(change)
            for sub in list(self._subscribers):
                if sub.matches(change):
                    try:
                        sub.loop.call_soon_threadsafe(sub._deliver, change)
                    except RuntimeError:  # its loop is closed: the stream is gone
                        self._subscribers.remove(sub)

    def subscribe(self, after: int, matches: Callable[[Change], bool]) -> tuple[Subscription, list[Change]]:
        """Register a watcher; returns it with the held changes newer than `after` (its backlog)."""
        sub = Subscription(matches=matches, loop=asyncio.get_running_loop())
        with self._lock:
            if after < self._floor:
                raise WatchExpired(
                    f"too old resource version: {after} (the oldest this server can resume from is {self._floor})"
                )
            backlog = [c for c in self._history if c.resource.resource_version > after and matches(c)]
            self._subscribers.append(sub)
        return sub, backlog

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subscribers:
                self._subscribers.remove(sub)

    @property
    def watchers(self) -> int:
        with self._lock:
            return len(self._subscribers)
