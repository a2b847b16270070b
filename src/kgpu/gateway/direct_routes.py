"""The gateway's inference POSTs, called straight from the ASGI stack, ahead of FastAPI's router.

Why: at concurrency 1 the gateway's own CPU is most of what it adds to a request. On the embedded
server the inference routes share one FastAPI app with the control plane's API and console, so each
request was matched against every route declared before them and went through FastAPI's exception
and exit-stack middlewares and its endpoint wrapper (dependency solving) before its handler ran;
profiled with py-spy, that was about a third of the gateway's CPU per request. These routes take
only the `Request` and answer a `Response`, so nothing of that is needed: this middleware calls the
same endpoint functions for their exact paths (the routes stay declared, for the OpenAPI document
and every other method). It sits inside the request guard, and inside the server error middleware,
so refusals and 500s are answered as before.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


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
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
