"""The kgpu server: control-plane API and gateway on one port (embedded mode)."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from kgpu import __version__
from kgpu.controlplane.auth import AccessControl, AuthStore, cluster_registration_check
from kgpu.controlplane.console import mount_console
from kgpu.controlplane.console_routes import console_routes
from kgpu.controlplane.kubeconfigs import kubeconfig_routes
from kgpu.controlplane.openapi import install_resource_schemas
from kgpu.controlplane.platform import Platform
from kgpu.controlplane.quota import quota_check
from kgpu.controlplane.request_guard import GuardSettings, RequestGuard
from kgpu.controlplane.routes import PREFIX, control_routes
from kgpu.gateway.app import OPENAI_INFERENCE_PATHS, gateway_routes
from kgpu.gateway.direct_routes import DirectRoutes
from kgpu.gc_tuning import freeze_what_is_loaded
from kgpu.telemetry.runtime_metrics import runtime_metrics

log = logging.getLogger("kgpu")


class ServerApp(FastAPI):
    """FastAPI with a front: the ASGI app the server calls first (`front`), which hands what it does not
    answer itself to FastAPI's own call (`fastapi_call`)."""

    front: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is None:
            await super().__call__(scope, receive, send)
        else:
            await self.front(scope, receive, send)

    async def fastapi_call(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def create_server_app(platform: Platform, auth: bool = False, guard: GuardSettings | None = None) -> FastAPI:
    """`auth`: every control-plane and inference route needs a project's token (a server shared by teams).

    `guard`: the names and origins the server answers to (`request_guard.guard_settings` of its
    bind address); by default any `Host`, and writes only from this server's own origin.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await platform.start()
        freeze_what_is_loaded()
        try:
            yield
        finally:
            await platform.stop()

    app = ServerApp(
        title="kgpu",
        version=__version__,
        summary="GPU inference platform: control-plane API and OpenAI / Open Inference Protocol gateway.",
        lifespan=lifespan,
    )
    app.state.platform = platform

    def _field(error: dict, content_type: str) -> dict:
        if error["type"] == "json_invalid":  # its loc holds the character position, not a field
            detail = error.get("ctx", {}).get("error", error["msg"])
            return {"path": "body", "message": f"not valid JSON at character {error['loc'][-1]}: {detail}"}
        # An error about the body as a whole has no path below it: name the body itself.
        path = ".".join(str(p) for p in error["loc"] if p != "body") or "body"
        if path == "body" and error["type"] == "model_attributes_type" and "json" not in content_type:
            # FastAPI reads only a JSON content type as JSON; anything else arrives as bytes.
            sent = content_type or "no content type"
            return {"path": "body", "message": f"must be a JSON object sent as application/json, not {sent}"}
        return {"path": path, "message": error["msg"]}

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Routing's own 404/405 say only "Not Found" / "Method Not Allowed": say what was asked for
        # and where the API is. Errors raised by the routes keep their message.
        where = f"{request.method} {request.url.path}"
        if exc.status_code == 404 and exc.detail == "Not Found":
            exc = StarletteHTTPException(
                404,
                f"{where}: no such endpoint (resources are under {PREFIX}/, inference under /v1 and "
                "/v2; every endpoint is listed at /docs)",
            )
        elif exc.status_code == 405 and exc.detail == "Method Not Allowed":
            allowed = (exc.headers or {}).get("Allow", "")
            exc = StarletteHTTPException(
                405, f"{where}: method not allowed here (allowed: {allowed or 'none'})", headers=exc.headers
            )
        return await http_exception_handler(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        content_type = request.headers.get("content-type", "")
        fields = [_field(e, content_type) for e in exc.errors()]
        message = "; ".join(f"{f['path']}: {f['message']}" for f in fields)
        return JSONResponse({"error": {"message": message, "fields": fields}}, status_code=422)

    control = control_routes(platform)
    app.state.watch_bus = control.watch_bus
    access = AccessControl(AuthStore(platform.store.engine), enabled=auth)
    platform.resources.admission.append(quota_check(access.store.project, platform.resources.services))
    platform.resources.admission.append(cluster_registration_check)
    if auth:  # tenants name models by package unless the cluster admin allows server paths
        platform.local_paths_allowed = access.store.local_paths_allowed
    app.state.access = access
    app.include_router(access.routes())
    app.include_router(
        kubeconfig_routes(platform.kubeconfigs, access)
    )  # before the control routes: /projects is not a resource type
    app.include_router(control, dependencies=[Depends(access.authorize)])
    app.include_router(console_routes(platform), dependencies=[Depends(access.authorize)])
    install_resource_schemas(app)
    gateway = gateway_routes(
        platform.router,
        platform.resolve_model,
        platform.known_models,
        # Under auth, inference needs a token of the service's project as well.
        verify=access.inference_caller if auth else None,
    )
    app.include_router(gateway)
    # The guard first, for every route; then inference straight to the gateway, ahead of FastAPI's call.
    direct = DirectRoutes(app.fastapi_call, router=gateway, paths=OPENAI_INFERENCE_PATHS)
    app.front = RequestGuard(direct, settings=guard or GuardSettings())

    @app.get("/healthz", tags=["health"], summary="The server is up")
    def healthz() -> dict:
        return {"status": "ok", "version": __version__}

    @app.get(
        "/metrics",
        tags=["metrics"],
        summary="Prometheus metrics of the gateway, the control plane and command runtimes (under auth: the metrics token)",
        dependencies=[Depends(access.authorize_metrics)],
    )
    async def metrics() -> Response:
        registry = platform.metrics.registry
        own = await run_in_threadpool(generate_latest, registry)  # the GPU exporter reads NVML
        targets = platform.runtime_metrics_targets()
        if not targets:
            return Response(own, media_type=CONTENT_TYPE_LATEST)
        # Command runtimes' own series, with the service's labels (kgpu.telemetry.runtime_metrics).
        taken = await run_in_threadpool(
            lambda: {f.name for f in text_string_to_metric_families(own.decode())}
        )
        async with httpx.AsyncClient(trust_env=False) as client:  # loopback, never through a proxy
            theirs = await runtime_metrics(client, targets, taken)
        return Response(own + theirs, media_type=CONTENT_TYPE_LATEST)

    mount_console(app)
    return app
