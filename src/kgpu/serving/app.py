"""The replica's HTTP app: OpenAI embeddings, Open Inference Protocol v2, health and Prometheus metrics.

`create_app(config)` returns a FastAPI app whose lifespan starts loading the model in the background (so
liveness answers at once) and, at shutdown, turns readiness off before draining the batcher.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kgpu.serving.config import ReplicaConfig
from kgpu.serving.errors import ApiError, bad_request, error_response
from kgpu.serving.gateway_secret import GatewayOnly, secret_from_environment
from kgpu.serving.generation_api import create_generation_router
from kgpu.serving.generation_runtime import GenerationRuntime, replica_task
from kgpu.serving.generation_v2 import create_generate_router
from kgpu.serving.metrics import CONTENT_TYPE, ReplicaMetrics
from kgpu.serving.openai_api import create_openai_router
from kgpu.serving.runtime import EngineFactory, ReplicaRuntime
from kgpu.serving.v2_api import create_health_router, create_v2_router

__all__ = ["ReplicaConfig", "create_app"]


def create_app(config: ReplicaConfig, engine_factory: EngineFactory | None = None) -> FastAPI:
    """Build the app; `engine_factory(config)` replaces model loading (used to share or fake an engine).

    The runtime follows the model: text generation for a causal language model (or `task: generation`),
    embeddings otherwise (kgpu.serving.generation_runtime.replica_task)."""
    runtime: ReplicaRuntime | GenerationRuntime
    if replica_task(config) == "generation":
        runtime = GenerationRuntime(config, engine_factory)
        routers = [
            create_health_router(runtime, ["generate"]),
            create_generation_router(runtime),
            create_generate_router(runtime),
        ]
    else:
        runtime = ReplicaRuntime(config, engine_factory)
        routers = [
            create_health_router(runtime, []),
            create_openai_router(runtime),
            create_v2_router(runtime),
        ]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        runtime.start_loading()
        yield
        await runtime.shutdown()

    app = FastAPI(
        title=f"kgpu replica {config.served_name}", lifespan=lifespan, docs_url=None, redoc_url=None
    )
    app.state.runtime = runtime
    for router in routers:
        app.include_router(router)
    app.add_middleware(RequestMetricsMiddleware, metrics=runtime.metrics)
    if (secret := secret_from_environment()) is not None:  # started by kgpu: answer only its gateway
        app.add_middleware(GatewayOnly, secret=secret)
    _install_error_handlers(app, runtime.metrics)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)

    return app


def _install_error_handlers(app: FastAPI, metrics: ReplicaMetrics) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        metrics.count_failure(exc.reason)
        return error_response(request.url.path, exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        # FastAPI's default is a 422 with its own shape; clients of both protocols expect 400 and their shape.
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        field = ".".join(str(part) for part in first.get("loc", ()) if part not in ("body", "path", "query"))
        message = f"invalid value for '{field}': {first.get('msg')}" if field else str(first.get("msg"))
        metrics.count_failure("bad_request")
        return error_response(
            request.url.path, ApiError(400, message, param=field or None, code="invalid_value")
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = f"{request.method} {request.url.path}: {exc.detail}"
        return error_response(request.url.path, ApiError(exc.status_code, message, headers=exc.headers))

    @app.exception_handler(RecursionError)
    async def nested_too_deeply(request: Request, exc: RecursionError) -> Response:
        # A JSON body may nest 1,024 levels (orjson's limit); code that walks or prints a value that
        # deep (a repr in an error message) runs out of stack: the client's input, not our fault.
        metrics.count_failure("bad_request")
        return error_response(request.url.path, bad_request("request body is nested too deeply"))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        metrics.count_failure("internal")
        return error_response(request.url.path, ApiError(500, f"internal error: {type(exc).__name__}: {exc}"))


class RequestMetricsMiddleware:
    """Counts inference requests by protocol and status code and times them (pure ASGI: no body buffering)."""

    def __init__(self, app: ASGIApp, metrics: ReplicaMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        protocol = _protocol_of(scope) if scope["type"] == "http" else None
        if protocol is None:
            await self._app(scope, receive, send)
            return
        status = 500
        started = time.perf_counter()

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, record_status)
        finally:
            self._metrics.observe_request(protocol, status, time.perf_counter() - started)


def _protocol_of(scope: Scope) -> str | None:
    path: str = scope.get("path", "")
    if scope.get("method") != "POST":
        return None
    if path in ("/v1/embeddings", "/v1/chat/completions", "/v1/completions"):
        return "openai"
    if path.startswith("/v2/models/") and path.endswith(("/infer", "/generate", "/generate_stream")):
        return "v2"
    return None
