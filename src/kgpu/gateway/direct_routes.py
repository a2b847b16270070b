"""The gateway's inference POSTs, called straight from the ASGI server, ahead of FastAPI's own stack.

Why: at concurrency 1 the gateway's own CPU is most of what it adds to a request. On the embedded
server the inference routes share one FastAPI app with the control plane's API and console, so each
request went through FastAPI's application call (its telemetry check reads the environment on every
request), its middlewares (server errors, body limit, exceptions, exit stack), was matched against
every route declared before it and went through the endpoint wrapper (dependency solving) before its
handler ran. These routes take only the `Request` and answer a `Response`, so nothing of that is
needed: `DirectRoutes` calls the same endpoint functions for their exact paths (the routes stay
declared, for the OpenAPI document and every other method), and answers an endpoint's failure with
the 500 FastAPI's server error middleware would give. Whoever puts it in front of FastAPI's call
(kgpu.controlplane.server) puts the request guard in front of it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("kgpu.gateway")


class DirectRoutes:
    """ASGI middleware: a POST to one of `paths` (routes of `router`) calls its endpoint directly."""

    def __init__(self, app: ASGIApp, router: APIRouter, paths: Iterable[str]) -> None:
        self.app = app
        wanted = set(paths)
        self.endpoints: dict[str, Endpoint] = {
            route.path: route.endpoint
            for route in router.routes
            if isinstance(route, APIRoute) and route.path in wanted and "POST" in route.methods
        }
        if missing := wanted - set(self.endpoints):
            raise ValueError(f"no POST route for {sorted(missing)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.endpoints.get(scope["path"])
            if endpoint is not None:
                await self._call(endpoint, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _call(self, endpoint: Endpoint, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            response = await endpoint(Request(scope, receive, sending))
            await response(scope, receive, sending)
        except Exception:
            # What Starlette's ServerErrorMiddleware does: a plain 500 if nothing was sent yet, and the
            # exception goes on to the server, which logs it.
            if not started:
                await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
