"""Stop working for a client that has gone: its request leaves the hold queue at once.

Starlette runs a route to its end whether or not the client is still connected, so a request
held for a replica (a service scaling from zero, every replica busy) stayed in the queue until
its hold timeout although nobody would read the answer: 2,100 requests from clients that gave up
after 5 s filled the queue (2,048) and every new request got an instant 503 for two minutes.
Here the forward runs beside a watch on the connection; a disconnect cancels the forward, which
leaves the queue (and passes on a turn it was given) as any cancelled wait does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from starlette.requests import Request

T = TypeVar("T")


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """The result of `work`, or None when the client went first (`work` is then cancelled)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((task, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return None if task.cancelled() else task.result()
