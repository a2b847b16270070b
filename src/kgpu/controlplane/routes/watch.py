"""`?watch=true` on a list path: the store's changes as server-sent events, resumable by resourceVersion."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kgpu.api.errors import FieldError
from kgpu.controlplane.auth import visible
from kgpu.controlplane.resources import with_metadata
from kgpu.controlplane.routes.http import error_response, sse
from kgpu.controlplane.store import Change, ResourceStore, StoredResource
from kgpu.controlplane.watch import WatchBus, WatchExpired

# Idle watch streams send an SSE comment this often so proxies keep them open.
WATCH_HEARTBEAT_S = 15.0


async def watch_response(
    request: Request,
    bus: WatchBus,
    store: ResourceStore,
    render: Callable[[StoredResource], dict],
    kind: str,
    namespace: str | None,
    since: str | None,
    timeout_s: int | None,
) -> StreamingResponse | JSONResponse:
    def matches(change: Change) -> bool:
        r = change.resource
        return r.kind == kind and namespace in (None, r.namespace) and visible(request, r.namespace)

    since = since or request.headers.get("last-event-id") or None
    initial: list[Change] = []
    if since in (None, "0"):
        # No version: the current objects as ADDED events, then every change after them.
        stored, revision = await run_in_threadpool(store.list_at_revision, kind, namespace)
        initial = [Change("ADDED", s) for s in stored if visible(request, s.namespace)]
    else:
        try:
            revision = int(since)
        except ValueError:
            return error_response(
                422,
                "Invalid",
                f'resourceVersion: Invalid value: "{since}": must be an integer',
                [FieldError("resourceVersion", f'Invalid value: "{since}": must be an integer')],
            )
    try:
        sub, backlog = bus.subscribe(revision, matches)
    except WatchExpired as exc:
        return error_response(410, "Expired", str(exc))

    def event_bytes(change: Change) -> bytes:
        obj = with_metadata(change.resource) if change.type == "DELETED" else render(change.resource)
        rv = change.resource.resource_version
        return sse(change.type, {"type": change.type, "object": obj}, rv)

    async def stream() -> AsyncIterator[bytes]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        try:
            for change in [*initial, *backlog]:
                yield event_bytes(change)
            while True:
                wait = WATCH_HEARTBEAT_S
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        return
                try:
                    change = await asyncio.wait_for(sub.queue.get(), wait)
                except asyncio.TimeoutError:
                    if await request.is_disconnected():
                        return
                    yield b": keep-alive\n\n"
                    continue
                if change is None:  # the watcher fell too far behind
                    status = {"code": 410, "reason": "Expired", "message": "watcher fell behind; resume"}
                    yield sse("ERROR", {"type": "ERROR", "object": status})
                    return
                yield event_bytes(change)
        finally:
            bus.unsubscribe(sub)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )
