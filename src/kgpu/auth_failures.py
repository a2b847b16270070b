"""Failed token checks are limited per client address and per token id.

A wrong token costs the server a database read and one HMAC; without a limit an anonymous
caller could still spend the server's CPU on them at line rate, and guess secrets as fast as
the network carries requests. Each client address and each token id has a budget of failed
checks per window; past it the caller gets 429 with Retry-After until the window ends.

A client address over its budget is refused before its token is looked at (no database read,
no hash). A token id over its budget is checked all the same: the right secret still passes
(so that a caller who only knows another project's token id cannot lock that project out),
and only wrong secrets get 429 instead of 401.

Every failed check is answered after FAILURE_DELAY_S (an asyncio sleep: it holds a connection,
not a CPU), as login programs delay a wrong password: a client that waits for each answer, as
HTTP clients do, then sends at most one wrong token per second per connection, so a flood of
them costs the server almost nothing and legitimate traffic keeps its throughput
(bench/security.py measures both). How many connections a client may open is uvicorn's limit.

The counters are fixed windows in memory, bounded in number (the oldest are dropped first):
a server that restarts forgets them, and servers sharing a database count apart. Each key's
budget resets when its window ends.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

# Failed token checks one client address may make per window before it gets 429.
FAILURES_PER_ADDRESS = 20
# Failed checks of one token id (from any address) per window before wrong secrets get 429.
FAILURES_PER_TOKEN_ID = 50
WINDOW_S = 60.0
# How long a failed check (401 or 429) waits before it is answered.
FAILURE_DELAY_S = 1.0
# Counters kept at most (per kind); the oldest go first, so memory stays bounded under a flood.
MAX_TRACKED_KEYS = 100_000


class TooManyFailures(Exception):
    """Too many failed token checks: answer 429, and let the caller retry after `retry_after_s`."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many failed token checks; retry after {math.ceil(retry_after_s)} s")
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


class _Windows:
    """Failures per key in fixed windows: key -> (window start, failures in it)."""

    def __init__(self, limit: int, window_s: float, clock: Callable[[], float]) -> None:
        self.limit = limit
        self.window_s = window_s
        self.clock = clock
        self._counts: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def wait(self, key: str) -> float | None:
        """Seconds until `key` may fail again, or None when it is within its budget."""
        entry = self._counts.get(key)
        if entry is None:
            return None
        start, count = entry
        left = start + self.window_s - self.clock()
        if left <= 0:
            del self._counts[key]
            return None
        return left if count >= self.limit else None

    def add(self, key: str) -> None:
        now = self.clock()
        start, count = self._counts.pop(key, (now, 0))
        if now - start >= self.window_s:
            start, count = now, 0
        self._counts[key] = (start, count + 1)  # most recent last: the oldest are dropped first
        while len(self._counts) > MAX_TRACKED_KEYS:
            self._counts.popitem(last=False)


class FailureLimiter:
    """Budgets of failed token checks per client address and per token id (thread-safe)."""

    def __init__(
        self,
        per_address: int = FAILURES_PER_ADDRESS,
        per_token_id: int = FAILURES_PER_TOKEN_ID,
        window_s: float = WINDOW_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._addresses = _Windows(per_address, window_s, clock)
        self._token_ids = _Windows(per_token_id, window_s, clock)
        self._lock = threading.Lock()

    def check_address(self, address: str) -> None:
        """Raise TooManyFailures when the address has used its budget (before any token check)."""
        with self._lock:
            wait = self._addresses.wait(address)
        if wait is not None:
            raise TooManyFailures(wait)

    def token_id_blocked(self, token_id: str) -> bool:
        with self._lock:
            return self._token_ids.wait(token_id) is not None

    def failed(self, address: str, token_id: str) -> None:
        """Count a failed check; raise TooManyFailures when the address or the id is past its budget."""
        with self._lock:
            self._addresses.add(address)
            self._token_ids.add(token_id)
            waits = [w for w in (self._addresses.wait(address), self._token_ids.wait(token_id)) if w]
        if waits:
            raise TooManyFailures(max(waits))
