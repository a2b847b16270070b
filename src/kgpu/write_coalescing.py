"""Send what a server writes in one turn of the event loop as one segment: a whole answer in one `send`.

uvicorn writes a response's status line and headers with one `transport.write` and its body with
another; on uvloop each write is its own `send` system call, so every small answer leaves as two TCP
segments and wakes its client twice. In front of a replica the gateway does this on every request
(and the replica's own answer reaches the gateway the same way): at concurrency 1 each extra send and
wake-up is time the client waits, most of all on a machine whose few cores are busy with the model.
`CoalescingTransport` keeps a write until the next one of the same loop turn, or the end of that turn,
and hands them to the real transport together (`writelines`, one vectored send). Nothing waits longer
than the current turn: a streamed answer's chunks still leave as they are written.
"""

from __future__ import annotations

import asyncio
from typing import Any


class CoalescingTransport:
    """A transport that passes on the writes of one event-loop turn at once; everything else is the
    real transport's (reads, flow control, extra info)."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self._flush)
        else:
            # A second write in the same turn (an answer's body after its headers) sends both at once:
            # waiting for the end of the turn as well was measurable at concurrency 1
            # (bench/results/2026-12-05-gateway-hot-path.md).
            self._pending.append(data)
            self._flush()

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.writelines(pending)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending or ()))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()  # what was written before close() is still sent, as by any transport
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
