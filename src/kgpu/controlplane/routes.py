"""REST API of the control plane, with Kubernetes-style paths.

`PUT .../{plural}/{name}` creates or replaces (what `kgpu apply` uses), `POST
.../{plural}` only creates, `PATCH` applies a JSON merge patch (RFC 7386) and validates
the result like a `PUT`. Validation errors are 422 with one entry per field; a write
naming a stale `metadata.resourceVersion` is 409. `?watch=true` on a list path streams
`ADDED`/`MODIFIED`/`DELETED` events as server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import AsyncIterator

import orjson
import yaml
from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kgpu import API_VERSION
from kgpu.api.errors import FieldError, ResourceValidationError
from kgpu.api.io import json_loads_strict, parse_resource, safe_load
from kgpu.api.models import InferenceService, NodePool
from kgpu.body_limit import BodyTooLarge, read_limited
from kgpu.controlplane.auth import principal_of, visible
from kgpu.controlplane.openapi import (
    MERGE_PATCH_BODY,
    RESOURCE_BODY,
    RESOURCE_RESPONSE,
    WATCH_RESPONSE,
    error_responses,
)
from kgpu.controlplane.platform import Platform
from kgpu.controlplane.pools import observed_pool_status
from kgpu.controlplane.resources import KIND_BY_PLURAL, NotFoundError, with_metadata
from kgpu.controlplane.simnodes import SimNodes
from kgpu.controlplane.store import Change, ConflictError
from kgpu.controlplane.watch import WatchBus, WatchExpired

PREFIX = f"/apis/{API_VERSION}"
MAX_LOG_BYTES = 256 * 1024
# The Kubernetes API server's limit for a request body: a resource is kilobytes; without a limit one
# request could make the server hold (and store, and list) anything up to its memory.
MAX_BODY_BYTES = 3 * 1024 * 1024
MERGE_PATCH = "application/merge-patch+json"
# Idle watch streams send an SSE comment this often so proxies keep them open.
WATCH_HEARTBEAT_S = 15.0
# A PATCH without a resourceVersion is retried on a conflicting concurrent write, at most this often.
PATCH_ATTEMPTS = 5

# Path parameters: what the store can hold (DNS-1123 labels; names up to 253 characters).
NAMESPACE = Path(..., max_length=63, description="Namespace (project) of the resource")
PLURAL = Path(
    ...,
    description="Resource type",
    json_schema_extra={"enum": sorted(KIND_BY_PLURAL)},
)
NAME = Path(..., max_length=253, description="Name of the resource")


class ResourceJSON(Response):
    """A resource or list body serialized by orjson in one call.

    Returning a plain dict makes FastAPI walk it through ``jsonable_encoder`` first, which
    cost more than everything else in a LIST of 50 services; the bodies here are already
    JSON-native (they come from the store as JSON).
    """

    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def error_response(status: int, reason: str, message: str, fields: list[FieldError] = ()) -> JSONResponse:
    error: dict = {"message": message, "reason": reason}
    if fields:
        error["fields"] = [{"path": f.path, "message": f.message} for f in fields]
    return JSONResponse({"error": error}, status_code=status)


def validation_response(exc: ResourceValidationError) -> JSONResponse:
    return JSONResponse(
        {
            "error": {
                "message": str(exc),
                "reason": "Invalid",
                "fields": [{"path": e.path, "message": e.message} for e in exc.errors],
            }
        },
        status_code=422,
    )


def _kind(plural: str) -> str:
    try:
        return KIND_BY_PLURAL[plural]
    except KeyError:
        known = ", ".join(sorted(KIND_BY_PLURAL))
        raise HTTPException(
            404, f'the server does not have resource type "{plural}" (known: {known})'
        ) from None


async def _read_body(request: Request) -> bytes:
    """The body, refused past MAX_BODY_BYTES whether it is declared (Content-Length) or streamed."""
    try:
        return await read_limited(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise HTTPException(
            413, f"request body is larger than the limit of {MAX_BODY_BYTES} bytes; a resource is far smaller"
        ) from None


async def _json_body(request: Request) -> dict:
    raw = await _read_body(request)
    try:
        body = safe_load(raw) if "yaml" in request.headers.get("content-type", "") else json_loads_strict(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise HTTPException(400, f"request body is not valid JSON/YAML: {exc}") from None
    except RecursionError:
        raise HTTPException(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be one resource object")
    return body


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386: objects merge key by key, `null` removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _kind_mismatch(body: dict, kind: str) -> JSONResponse | None:
    if body.get("kind") in (None, kind):
        return None
    message = f'Invalid value: "{body.get("kind")}": this path takes {kind}'
    return error_response(422, "Invalid", f"kind: {message}", [FieldError("kind", message)])


def _sse(event: str, data: dict, event_id: int | None = None) -> bytes:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class ListQuery:
    """Query parameters shared by both list paths (all namespaces, one namespace)."""

    def __init__(
        self,
        watch: bool = Query(False, description="Stream changes as server-sent events instead of a list"),
        resource_version: str | None = Query(
            None, alias="resourceVersion", description="Watch: send changes after this version"
        ),
        timeout_seconds: int | None = Query(
            None, alias="timeoutSeconds", ge=0, le=86400, description="Watch: end the stream after this long"
        ),
    ) -> None:
        self.watch = watch
        self.resource_version = resource_version
        self.timeout_seconds = timeout_seconds


def control_routes(platform: Platform, sim_nodes: SimNodes | None = None) -> APIRouter:
    """`sim_nodes`: the virtual nodes of sim clusters (their pools' status and `/api/v1/nodes`)."""
    api = APIRouter(tags=["control plane"])

    def render(stored) -> dict:
        body = with_metadata(stored)
        if stored.kind == "InferenceService":
            resource = platform.resources.parsed(stored)
            assert isinstance(resource, InferenceService)
            body["status"] = platform.service_status(resource)
        elif stored.kind == "NodePool":
            pool = platform.resources.parsed(stored)
            assert isinstance(pool, NodePool)
            body["status"] = observed_pool_status(pool, platform.backend, sim_nodes)
        return body

    bus = WatchBus(platform.store.revision())
    platform.store.add_listener(bus.publish)
    api.watch_bus = bus  # what the server exposes as app.state.watch_bus

    def store_resource(body: dict, namespace: str, name: str | None, create_only: bool) -> JSONResponse:
        try:
            stored, created = platform.resources.apply(body, namespace, name, create_only=create_only)
        except ResourceValidationError as exc:
            return validation_response(exc)
        except ConflictError as exc:
            return error_response(409, "Conflict", str(exc))
        return stored_response(stored, created)

    def stored_response(stored, created: bool) -> JSONResponse:
        if stored.kind == "InferenceService":
            key = f"{stored.namespace}/{stored.name}"
            platform.reconciler.record_write(key, stored.body["spec"].get("replicas", 1))
            platform.events.record(key, "created" if created else "updated")
        return ResourceJSON(render(stored), status_code=201 if created else 200)

    # Reads run on the event loop: the store serves them from memory after one single-row
    # query, cheaper than the hand-off to a worker thread (measured: with PostgreSQL, reads in
    # worker threads saturated the CPU at about 420 of 500 requests/s). A SQLite write is a
    # file append of well under a millisecond and runs in place too; a database server's
    # several round trips per write stay off the loop.
    writes_in_place = platform.store.engine.dialect.name == "sqlite"

    async def in_worker(fn, *args) -> JSONResponse:
        """Store (see `writes_in_place`), then wake the reconciler from the loop."""
        response = fn(*args) if writes_in_place else await run_in_threadpool(fn, *args)
        platform.reconciler.kick()
        return response

    def list_response(kind: str, namespace: str | None, request: Request | None = None) -> dict:
        stored, revision = platform.store.list_at_revision(kind, namespace)
        if request is not None:  # a project's token sees only its project's resources
            stored = [s for s in stored if visible(request, s.namespace)]
        return {
            "apiVersion": API_VERSION,
            "kind": f"{kind}List",
            # Where a watch continues from without missing or repeating a change.
            "metadata": {"resourceVersion": str(revision)},
            "items": [render(s) for s in stored],
        }

    async def list_or_watch(request: Request, plural: str, namespace: str | None, query: ListQuery):
        kind = _kind(plural)
        if query.watch:
            return await watch_response(
                request, kind, namespace, query.resource_version, query.timeout_seconds
            )
        return ResourceJSON(list_response(kind, namespace, request))

    async def watch_response(
        request: Request, kind: str, namespace: str | None, since: str | None, timeout_s: int | None
    ) -> StreamingResponse | JSONResponse:
        def matches(change: Change) -> bool:
            r = change.resource
            return r.kind == kind and namespace in (None, r.namespace) and visible(request, r.namespace)

        since = since or request.headers.get("last-event-id") or None
        initial: list[Change] = []
        if since in (None, "0"):
            # No version: the current objects as ADDED events, then every change after them.
            stored, revision = await run_in_threadpool(platform.store.list_at_revision, kind, namespace)
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
            return _sse(change.type, {"type": change.type, "object": obj}, rv)

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
                        yield _sse("ERROR", {"type": "ERROR", "object": status})
                        return
                    yield event_bytes(change)
            finally:
                bus.unsubscribe(sub)

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    # Patches of one resource in this process take turns (striped locks, bounded memory), so
    # they do not make each other retry; the retry loop is left for writers in other processes.
    patch_locks = [threading.Lock() for _ in range(64)]

    def apply_patch(namespace: str, kind: str, name: str, patch: dict) -> JSONResponse:
        with patch_locks[hash((kind, namespace, name)) % len(patch_locks)]:
            return _apply_patch(namespace, kind, name, patch)

    def _apply_patch(namespace: str, kind: str, name: str, patch: dict) -> JSONResponse:
        meta_patch = patch.get("metadata")
        pinned = isinstance(meta_patch, dict) and meta_patch.get("resourceVersion") not in (None, "")
        for _attempt in range(PATCH_ATTEMPTS):
            try:
                current = platform.resources.get(kind, namespace, name)
            except NotFoundError as exc:
                return error_response(404, "NotFound", str(exc))
            merged = merge_patch(with_metadata(current), patch)
            assert isinstance(merged, dict)  # the patch is an object, so the result is one
            if (mismatch := _kind_mismatch(merged, kind)) is not None:
                return mismatch
            try:
                stored, created = platform.resources.apply(merged, namespace, name)
            except ResourceValidationError as exc:
                return validation_response(exc)
            except ConflictError as exc:
                if pinned:
                    return error_response(409, "Conflict", str(exc))
                continue  # someone wrote in between: patch the newer version
            return stored_response(stored, created)
        return error_response(409, "Conflict", f'{kind} "{name}" kept changing; try the patch again')

    resource_errors = error_responses(400, 404, 409, 413, 422)
    item_path = PREFIX + "/namespaces/{namespace}/{plural}/{name}"

    # Registered before the generic /{plural} routes, which would otherwise match first.
    @api.get(
        PREFIX + "/prometheus/targets",
        summary="Prometheus HTTP service discovery: this server (role=server) or the ready replicas",
    )
    def prometheus_targets(request: Request, role: str = Query("replicas", pattern="^(server|replicas)$")):
        node = platform.inventory.hostname
        if role == "server":
            # The address Prometheus reached this server at is the one it can scrape.
            return [{"targets": [request.url.netloc], "labels": {"node": node}}]
        groups = []
        for replica in platform.backend.replicas():
            if replica.phase != "Ready" or not replica.url:
                continue
            project, _, _name = replica.service.partition("/")
            if not visible(request, project):
                continue
            labels = {
                "project": project,
                "service": replica.service,
                "replica": replica.name,
                "node": replica.node or node,
                "gpu": platform.replica_gpus(replica.name),
            }
            groups.append({"targets": [replica.url.split("://", 1)[-1]], "labels": labels})
        return groups

    @api.get(PREFIX + "/replicas", summary="Replicas of every service")
    def list_replicas(
        request: Request, service: str | None = Query(None, description="namespace/name")
    ) -> dict:
        replicas = platform.backend.replicas(service)
        return {"items": [r.to_dict() for r in replicas if visible(request, r.service.partition("/")[0])]}

    @api.get(PREFIX + "/replicas/{name}/log", summary="A replica's log", response_class=PlainTextResponse)
    def replica_log(
        request: Request, name: str, offset: int = Query(0, ge=0), tail: int | None = Query(None, ge=1)
    ):
        path = platform.backend.log_path(name)
        principal = principal_of(request)
        if principal is not None and not principal.cluster_admin:
            owners = {r.service.partition("/")[0] for r in platform.backend.replicas() if r.name == name}
            if principal.project not in owners:
                raise HTTPException(404, f'no log for replica "{name}"')
        if not path.exists():
            raise HTTPException(404, f'no log for replica "{name}"')
        size = path.stat().st_size
        with path.open("rb") as f:
            if tail is not None:
                f.seek(max(0, size - MAX_LOG_BYTES))
                lines = f.read().decode(errors="replace").splitlines()[-tail:]
                text = "\n".join(lines) + ("\n" if lines else "")
            else:
                f.seek(min(offset, size))
                text = f.read(MAX_LOG_BYTES).decode(errors="replace")
                size = min(size, offset + MAX_LOG_BYTES) if offset <= size else size
        return PlainTextResponse(text, headers={"x-log-offset": str(size)})

    @api.get(
        PREFIX + "/{plural}",
        summary="List (or watch) resources in all namespaces",
        responses={**RESOURCE_RESPONSE, **WATCH_RESPONSE, **error_responses(404, 410, 422)},
    )
    async def list_all(
        request: Request,
        plural: str = PLURAL,
        query: ListQuery = Depends(),
    ):
        return await list_or_watch(request, plural, None, query)

    @api.get(
        PREFIX + "/namespaces/{namespace}/{plural}",
        summary="List (or watch) resources in a namespace",
        responses={**RESOURCE_RESPONSE, **WATCH_RESPONSE, **error_responses(404, 410, 422)},
    )
    async def list_namespaced(
        request: Request,
        namespace: str = NAMESPACE,
        plural: str = PLURAL,
        query: ListQuery = Depends(),
    ):
        return await list_or_watch(request, plural, namespace, query)

    @api.post(
        PREFIX + "/namespaces/{namespace}/{plural}",
        status_code=201,
        summary="Create a resource",
        openapi_extra={"requestBody": RESOURCE_BODY},
        responses={201: RESOURCE_RESPONSE[200], **resource_errors},
    )
    async def create(request: Request, namespace: str = NAMESPACE, plural: str = PLURAL) -> JSONResponse:
        kind = _kind(plural)
        body = await _json_body(request)
        if (mismatch := _kind_mismatch(body, kind)) is not None:
            return mismatch
        return await in_worker(store_resource, body, namespace, None, True)

    @api.get(
        item_path,
        summary="Read a resource with its status",
        responses={**RESOURCE_RESPONSE, **resource_errors},
    )
    async def read(namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME):
        try:
            stored = platform.resources.get(_kind(plural), namespace, name)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return ResourceJSON(render(stored))

    @api.get(
        item_path + "/status",
        summary="The status subresource: the resource with its observed status",
        responses={**RESOURCE_RESPONSE, **resource_errors},
    )
    async def read_status(namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME):
        return await read(namespace, plural, name)

    @api.put(
        item_path,
        summary="Create or replace a resource",
        openapi_extra={"requestBody": RESOURCE_BODY},
        responses={**RESOURCE_RESPONSE, 201: RESOURCE_RESPONSE[200], **resource_errors},
    )
    async def replace(
        request: Request, namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME
    ) -> JSONResponse:
        kind = _kind(plural)
        body = await _json_body(request)
        if (mismatch := _kind_mismatch(body, kind)) is not None:
            return mismatch
        return await in_worker(store_resource, body, namespace, name, False)

    @api.patch(
        item_path,
        summary="Change a resource with a JSON merge patch (validated like a replace)",
        openapi_extra={"requestBody": MERGE_PATCH_BODY},
        responses={**RESOURCE_RESPONSE, **error_responses(400, 404, 409, 413, 415, 422)},
    )
    async def patch(
        request: Request, namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME
    ) -> JSONResponse:
        kind = _kind(plural)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in (MERGE_PATCH, "application/json"):
            return error_response(
                415,
                "UnsupportedMediaType",
                f'PATCH takes "{MERGE_PATCH}" (a JSON merge patch, RFC 7386), not "{media_type or "none"}"',
            )
        body = await _json_body(request)
        return await in_worker(apply_patch, namespace, kind, name, body)

    @api.delete(item_path, summary="Delete a resource", responses=error_responses(404, 422))
    def delete(namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME) -> dict:
        kind = _kind(plural)
        if not platform.store.delete(kind, namespace, name):
            raise HTTPException(404, f'{plural} "{name}" not found in namespace "{namespace}"')
        if kind == "InferenceService":
            key = f"{namespace}/{name}"
            platform.reconciler.record_delete(key)
            platform.events.record(key, "deleted; draining replicas")
        platform.reconciler.kick()
        return {"status": "Success", "details": {"name": name, "namespace": namespace, "kind": plural}}

    @api.get("/api/v1/nodes", summary="Nodes and their GPUs (this machine; sim clusters' virtual nodes)")
    def nodes(request: Request) -> dict:
        inventory = platform.inventory.to_dict()
        replicas = platform.backend.replicas()
        inventory["replicas"] = sum(
            1
            for r in replicas
            if r.phase not in ("Pending", "Terminated") and not r.extra.get("simulated")  # on virtual nodes
        )
        inventory["backend"] = "local"
        inventory["pid"] = os.getpid()
        items = [inventory]
        if sim_nodes is not None:
            pools = [parse_resource(s.body) for s in platform.store.list("NodePool")]
            items += [n for n in sim_nodes.node_items(pools) if visible(request, n["namespace"])]
        return {"items": items}

    return api
