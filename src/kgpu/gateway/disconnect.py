"""Stop working for a client that has gone: its request leaves the hold queue at once.

Starlette runs a route to its end whether or not the client is still connected, so a request
held for a replica (a service scaling from zero, every replica busy) stayed in the queue until
its hold timeout although nobody would read the answer: 2,100 requests from clients that gave up
after 5 s filled the queue (2,048) and every new request got an instant 503 for two minutes.
Here a disconnect cancels the forward, which leaves the queue (and passes on a turn it was given) as
any cancelled wait does.

On kgpu's own servers the connection tells the request when it is lost (kgpu.http_limits); elsewhere
(another ASGI server, the test client) a watch task starts once the request has taken `WATCH_AFTER_S`:
most answers come sooner, and a client that leaves is noticed that much later, which frees nothing any
later in practice: a request held for a replica waits far longer.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import TypeVar

from starlette.requests import Request

from kgpu.http_limits import DISCONNECT_HOOKS, DisconnectHooks

T = TypeVar("T")

WATCH_AFTER_S = 0.05


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body has been read: the next message is that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """The result of `work`, or None when the client went first (`work` is then cancelled).

    `work` runs in the caller's own task, which is cancelled when the client goes: on kgpu's servers
    by the connection's own disconnect hook (kgpu.http_limits), elsewhere by a watch task started after
    `WATCH_AFTER_S`. (A task for `work` and `asyncio.wait` over both, and then a watch timer per request,
    were each measurable at concurrency 1: bench/results/2026-12-05-gateway-hot-path.md.)"""
    current = asyncio.current_task()
    assert current is not None
    gone = False

    def leave() -> None:
        nonlocal gone
        gone = True
        current.cancel()

    hooks: DisconnectHooks | None = request.scope.get("extensions", {}).get(DISCONNECT_HOOKS)
    if hooks is not None:
        if hooks.lost:
            if inspect.iscoroutine(work):
                work.close()  # never started: closed, so nothing warns it was never awaited
            return None
        hooks.add(leave)
        stop_watching = functools.partial(hooks.discard, leave)
    else:
        stop_watching = _watch_later(request, leave)
    try:
        return await work
    except asyncio.CancelledError:
        if not gone:
            raise  # cancelled from elsewhere (the server stopping): not ours to swallow
        if hasattr(current, "uncancel"):  # Python 3.11+: the cancellation was handled here
            current.uncancel()
        return None
    finally:
        stop_watching()


def _watch_later(request: Request, leave: Callable[[], None]) -> Callable[[], None]:
    """Watch the request's connection from `WATCH_AFTER_S` on; returns what stops watching."""
    watcher: asyncio.Future[None] | None = None

    async def watch() -> None:
        await _disconnected(request)
        leave()

    def start_watching() -> None:
        nonlocal watcher
        watcher = asyncio.ensure_future(watch())

    timer = asyncio.get_running_loop().call_later(WATCH_AFTER_S, start_watching)

    def stop() -> None:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()

    return stop
