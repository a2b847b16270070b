"""Pass a replica's server-sent events on to the client as they come, and account for the work they carry.

Bytes go out chunk by chunk, never buffered into a whole answer. Each event is about one generated token, so
the replica's outstanding work (kgpu.gateway.registry.Endpoint.work) shrinks as the answer streams and the
router sees what is still to generate. A replica that fails after the first byte reached the client cannot be
replaced (the client has part of one answer), so the stream ends with an error event in the OpenAI shape.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable

from kgpu.gateway.upstream import ReplicaGone

log = logging.getLogger("kgpu.gateway")


def failure_event(message: str) -> bytes:
    error = {"message": message, "type": "server_error", "param": None, "code": 502}
    return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"


async def pass_on(
    rest: AsyncIterator[bytes],
    replica: str,
    on_events: Callable[[int], None],
    on_end: Callable[[], None],
) -> AsyncIterator[bytes]:
    """The chunks of `rest`; `on_events(n)` for every n events passed, `on_end()` once, however it ends."""
    try:
        async for chunk in rest:
            events = chunk.count(b"\n\n")
            if events:
                on_events(events)
            yield chunk
    except ReplicaGone as exc:
        log.warning("replica %s failed mid-stream (%s); ending the stream with an error event", replica, exc)
        yield failure_event(f"replica {replica} failed while streaming this answer: {exc}")
    finally:
        aclose = getattr(rest, "aclose", None)
        try:
            if aclose is not None:
                await aclose()
        finally:
            on_end()
