"""Recent events per service, shown by `kgpu get services -o wide` and in the log."""

from __future__ import annotations

import logging
import time
from collections import deque

log = logging.getLogger("kgpu.events")


class EventLog:
    def __init__(self, per_service: int = 20) -> None:
        self._events: dict[str, deque[tuple[float, str]]] = {}
        self._size = per_service

    def record(self, service: str, message: str) -> None:
        self._events.setdefault(service, deque(maxlen=self._size)).append((time.time(), message))
        log.info("%s: %s", service, message)

    def recent(self, service: str, limit: int = 5) -> list[dict]:
        items = list(self._events.get(service, ()))[-limit:]
        return [{"time": t, "message": m} for t, m in items]
