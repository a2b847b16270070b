"""REST API of the control plane's resources, with Kubernetes-style paths.

`PUT .../{plural}/{name}` creates or replaces (what `kgpu apply` uses), `POST
.../{plural}` only creates, `PATCH` applies a JSON merge patch (RFC 7386) and validates
the result like a `PUT`. Validation errors are 422 with one entry per field; a write
naming a stale `metadata.resourceVersion` is 409. `?watch=true` on a list path streams
`ADDED`/`MODIFIED`/`DELETED` events as server-sent events.

The handlers only translate HTTP: writes go through the resource service, statuses come from
the status view, and what follows a write (the reconciler, events, watches) listens to the store.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from kgpu import API_VERSION
from kgpu.api.errors import ResourceValidationError
from kgpu.controlplane.auth import visible
from kgpu.controlplane.openapi import (
    MERGE_PATCH_BODY,
    RESOURCE_BODY,
    RESOURCE_RESPONSE,
    WATCH_RESPONSE,
    error_responses,
)
from kgpu.controlplane.resources import NotFoundError, ResourceService, with_metadata
from kgpu.controlplane.routes.http import (
    NAME,
    NAMESPACE,
    PLURAL,
    PREFIX,
    ListQuery,
    ResourceJSON,
    error_response,
    json_body,
    kind_mismatch,
    kind_of,
    validation_response,
)
from kgpu.controlplane.routes.watch import watch_response
from kgpu.controlplane.store import ConflictError, StoredResource
from kgpu.controlplane.watch import WatchBus

MERGE_PATCH = "application/merge-patch+json"
# A PATCH without a resourceVersion is retried on a conflicting concurrent write, at most this often.
PATCH_ATTEMPTS = 5


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


def resource_routes(
    resources: ResourceService, render: Callable[[StoredResource], dict], bus: WatchBus
) -> APIRouter:
    """`render`: a stored resource as the API returns it (with its status)."""
    api = APIRouter(tags=["control plane"])
    store = resources.store

    def store_resource(body: dict, namespace: str, name: str | None, create_only: bool) -> JSONResponse:
        try:
            stored, created = resources.apply(body, namespace, name, create_only=create_only)
        except ResourceValidationError as exc:
            return validation_response(exc)
        except ConflictError as exc:
            return error_response(409, "Conflict", str(exc))
        return ResourceJSON(render(stored), status_code=201 if created else 200)

    # Reads run on the event loop: the store serves them from memory after one single-row
    # query, cheaper than the hand-off to a worker thread (measured: with PostgreSQL, reads in
    # worker threads saturated the CPU at about 420 of 500 requests/s). A SQLite write is a
    # file append of well under a millisecond and runs in place too; a database server's
    # several round trips per write stay off the loop.
    writes_in_place = store.engine.dialect.name == "sqlite"

    async def write(fn, *args) -> JSONResponse:
        """Store (see `writes_in_place`); the store's listeners take it from there."""
        return fn(*args) if writes_in_place else await run_in_threadpool(fn, *args)

    async def write_body(
        request: Request, namespace: str, plural: str, name: str | None, create_only: bool
    ) -> JSONResponse:
        """Create (POST) or create-or-replace (PUT) from the request's body."""
        kind = kind_of(plural)
        body = await json_body(request)
        if (mismatch := kind_mismatch(body, kind)) is not None:
            return mismatch
        return await write(store_resource, body, namespace, name, create_only)

    def list_response(kind: str, namespace: str | None, request: Request) -> dict:
        stored, revision = store.list_at_revision(kind, namespace)
        stored = [s for s in stored if visible(request, s.namespace)]  # a project's token sees its own
        return {
            "apiVersion": API_VERSION,
            "kind": f"{kind}List",
            # Where a watch continues from without missing or repeating a change.
            "metadata": {"resourceVersion": str(revision)},
            "items": [render(s) for s in stored],
        }

    async def list_or_watch(request: Request, plural: str, namespace: str | None, query: ListQuery):
        kind = kind_of(plural)
        if query.watch:
            return await watch_response(
                request, bus, store, render, kind, namespace, query.resource_version, query.timeout_seconds
            )
        return ResourceJSON(list_response(kind, namespace, request))

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
                current = resources.get(kind, namespace, name)
            except NotFoundError as exc:
                return error_response(404, "NotFound", str(exc))
            merged = merge_patch(with_metadata(current), patch)
            assert isinstance(merged, dict)  # the patch is an object, so the result is one
            if (mismatch := kind_mismatch(merged, kind)) is not None:
                return mismatch
            try:
                stored, created = resources.apply(merged, namespace, name)
            except ResourceValidationError as exc:
                return validation_response(exc)
            except ConflictError as exc:
                if pinned:
                    return error_response(409, "Conflict", str(exc))
                continue  # someone wrote in between: patch the newer version
            return ResourceJSON(render(stored), status_code=201 if created else 200)
        return error_response(409, "Conflict", f'{kind} "{name}" kept changing; try the patch again')

    resource_errors = error_responses(400, 404, 409, 413, 422)
    item_path = PREFIX + "/namespaces/{namespace}/{plural}/{name}"

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
        return await write_body(request, namespace, plural, None, create_only=True)

    @api.get(
        item_path,
        summary="Read a resource with its status",
        responses={**RESOURCE_RESPONSE, **resource_errors},
    )
    async def read(namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME):
        try:
            stored = resources.get(kind_of(plural), namespace, name)
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
        return await write_body(request, namespace, plural, name, create_only=False)

    @api.patch(
        item_path,
        summary="Change a resource with a JSON merge patch (validated like a replace)",
        openapi_extra={"requestBody": MERGE_PATCH_BODY},
        responses={**RESOURCE_RESPONSE, **error_responses(400, 404, 409, 413, 415, 422)},
    )
    async def patch(
        request: Request, namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME
    ) -> JSONResponse:
        kind = kind_of(plural)
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in (MERGE_PATCH, "application/json"):
            return error_response(
                415,
                "UnsupportedMediaType",
                f'PATCH takes "{MERGE_PATCH}" (a JSON merge patch, RFC 7386), not "{media_type or "none"}"',
            )
        body = await json_body(request)
        return await write(apply_patch, namespace, kind, name, body)

    @api.delete(item_path, summary="Delete a resource", responses=error_responses(404, 422))
    def delete(namespace: str = NAMESPACE, plural: str = PLURAL, name: str = NAME) -> dict:
        try:
            resources.delete(kind_of(plural), namespace, name)
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None
        return {"status": "Success", "details": {"name": name, "namespace": namespace, "kind": plural}}

    return api
