"""Limits on what one HTTP client may hold of a kgpu server (API, gateway and replicas alike).

uvicorn closes idle keep-alive connections and can cap concurrent connections, but it has no
deadline for reading a request: a client sending its headers a byte at a time (slowloris) held a
connection open for as long as it liked (45 s in a probe, and then only because it stopped).
:class:`DeadlineHttpToolsProtocol` is uvicorn's own httptools protocol with two deadlines added
(and its writes coalesced per event-loop turn, kgpu.write_coalescing):

- the request line and headers must arrive within HEADER_TIMEOUT_S of the request's first byte
  (or of the connection, for its first request);
- a request body must make progress at least every BODY_IDLE_TIMEOUT_S (while the server is
  reading it: time the server itself pauses reading does not count).

A client past either deadline has its connection closed. The protocol also tells a request's handler
when its connection is lost, without a task watching it (`DisconnectHooks` in the scope's
extensions, under `DISCONNECT_HOOKS`: kgpu.gateway.disconnect). The other limits, all uvicorn's own:

- TIMEOUT_KEEP_ALIVE_S: an idle keep-alive connection is closed after this long;
- LIMIT_CONCURRENCY: connections and requests in progress at once, past which uvicorn answers 503;
- request heads are limited by httptools (llhttp) to 80 KiB; bodies by each route (3 MiB for a
  resource, 512 KiB for YAML, 32 MiB at the gateway).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kgpu.write_coalescing import CoalescingTransport

HEADER_TIMEOUT_S = 10.0
BODY_IDLE_TIMEOUT_S = 30.0
TIMEOUT_KEEP_ALIVE_S = 5
# Above the gateway's hold queue (2,048 per service) so that a full queue answers its own 503.
LIMIT_CONCURRENCY = 4096

DISCONNECT_HOOKS = "kgpu.disconnect_hooks"


class DisconnectHooks:
    """Called once, when the connection is lost; `lost` stays True after that."""

    __slots__ = ("_hooks", "lost")

    def __init__(self) -> None:
        self.lost = False
        self._hooks: list[Callable[[], None]] = []

    def add(self, hook: Callable[[], None]) -> None:
        self._hooks.append(hook)

    def discard(self, hook: Callable[[], None]) -> None:
        if hook in self._hooks:
            self._hooks.remove(hook)

    def fire(self) -> None:
        self.lost = True
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook()


try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # uvicorn without httptools: its h11 protocol, without the read deadlines
    HttpToolsProtocol = None  # type: ignore[assignment, misc]


if HttpToolsProtocol is not None:

    class DeadlineHttpToolsProtocol(HttpToolsProtocol):  # type: ignore[misc, valid-type]
        """uvicorn's httptools protocol that closes connections too slow to send their request."""

        header_timeout_s = HEADER_TIMEOUT_S
        body_idle_timeout_s = BODY_IDLE_TIMEOUT_S

        # One timer per connection, moved lazily: arming a deadline only records when it falls, and the
        # timer, when it fires, checks the deadline then in force (re-arming a timer three times per
        # request was a visible part of the server's own CPU per request).
        _read_deadline: asyncio.TimerHandle | None = None
        _deadline_at: float | None = None
        _deadline_s = 0.0

        def _arm(self, seconds: float) -> None:
            self._deadline_at = self.loop.time() + seconds
            self._deadline_s = seconds
            if self._read_deadline is None:
                self._read_deadline = self.loop.call_at(self._deadline_at, self._check_deadline)

        def _disarm(self) -> None:
            self._deadline_at = None  # the timer finds nothing to do when it fires

        def _check_deadline(self) -> None:
            self._read_deadline = None
            if self._deadline_at is None:
                return
            if self.loop.time() < self._deadline_at:  # moved later since the timer was set
                self._read_deadline = self.loop.call_at(self._deadline_at, self._check_deadline)
            elif self.flow is not None and self.flow.read_paused:
                self._arm(self._deadline_s)  # the server stopped reading, not the client: not its time
            elif not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            # An answer's headers and body leave in one send (kgpu.write_coalescing).
            super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
            self._disconnect_hooks = DisconnectHooks()
            self._arm(self.header_timeout_s)

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None
            super().connection_lost(exc)
            self._disconnect_hooks.fire()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self.scope.setdefault("extensions", {})[DISCONNECT_HOOKS] = self._disconnect_hooks
            self._arm(self.header_timeout_s)

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(self.body_idle_timeout_s)

        def on_body(self, body: bytes) -> None:
            super().on_body(body)
            self._arm(self.body_idle_timeout_s)

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()


def uvicorn_limits() -> dict[str, Any]:
    """Keyword arguments of `uvicorn.Config` / `uvicorn.run` that set the limits above."""
    limits: dict[str, Any] = {
        "timeout_keep_alive": TIMEOUT_KEEP_ALIVE_S,
        "limit_concurrency": LIMIT_CONCURRENCY,
    }
    if HttpToolsProtocol is not None:
        limits["http"] = DeadlineHttpToolsProtocol
    return limits
