"""REST API of the control plane, with Kubernetes-style paths.

`PUT .../{plural}/{name}` creates or replaces (what `kgpu apply` uses), `POST
.../{plural}` only creates. Validation errors are 422 with one entry per field.
"""

from __future__ import annotations

import json
import os

import yaml
from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from kgpu import API_VERSION
from kgpu.api.errors import ResourceValidationError
from kgpu.api.io import parse_resource
from kgpu.api.models import InferenceService
from kgpu.controlplane.platform import Platform
from kgpu.controlplane.resources import KIND_BY_PLURAL, NotFoundError, with_metadata
from kgpu.controlplane.store import ConflictError

PREFIX = f"/apis/{API_VERSION}"
MAX_LOG_BYTES = 256 * 1024


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


async def _json_body(request: Request) -> dict:
    raw = await request.body()
    try:
        body = yaml.safe_load(raw) if "yaml" in request.headers.get("content-type", "") else json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise HTTPException(400, f"request body is not valid JSON/YAML: {exc}") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be one resource object")
    return body


def control_routes(platform: Platform) -> APIRouter:
    api = APIRouter(tags=["control plane"])

    def render(stored) -> dict:
        body = with_metadata(stored)
        if stored.kind == "InferenceService":
            resource = parse_resource(stored.body)
            assert isinstance(resource, InferenceService)
            body["status"] = platform.service_status(resource)
        return body

    def store_resource(body: dict, namespace: str, name: str | None, create_only: bool) -> JSONResponse:
        try:
            stored, created = platform.resources.apply(body, namespace, name, create_only=create_only)
        except ResourceValidationError as exc:
            return validation_response(exc)
        except ConflictError as exc:
            return JSONResponse({"error": {"message": str(exc), "reason": "Conflict"}}, status_code=409)
        if stored.kind == "InferenceService":
            key = f"{stored.namespace}/{stored.name}"
            platform.reconciler.desired[key] = stored.body["spec"].get("replicas", 1)
            platform.events.record(key, "created" if created else "updated")
        platform.reconciler.kick()
        return JSONResponse(render(stored), status_code=201 if created else 200)

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
    def list_replicas(service: str | None = Query(None, description="namespace/name")) -> dict:
        return {"items": [r.to_dict() for r in platform.backend.replicas(service)]}

    @api.get(PREFIX + "/replicas/{name}/log", summary="A replica's log", response_class=PlainTextResponse)
    def replica_log(name: str, offset: int = Query(0, ge=0), tail: int | None = Query(None, ge=1)):
        path = platform.backend.log_path(name)
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

    @api.get(PREFIX + "/{plural}", summary="List resources in all namespaces")
    def list_all(plural: str) -> dict:
        kind = _kind(plural)
        items = [render(s) for s in platform.store.list(kind)]
        return {"apiVersion": API_VERSION, "kind": f"{kind}List", "items": items}

    @api.get(PREFIX + "/namespaces/{namespace}/{plural}", summary="List resources in a namespace")
    def list_namespaced(namespace: str, plural: str) -> dict:
        kind = _kind(plural)
        items = [render(s) for s in platform.store.list(kind, namespace)]
        return {"apiVersion": API_VERSION, "kind": f"{kind}List", "items": items}

    @api.post(PREFIX + "/namespaces/{namespace}/{plural}", status_code=201, summary="Create a resource")
    async def create(namespace: str, plural: str, request: Request) -> JSONResponse:
        _kind(plural)
        return store_resource(await _json_body(request), namespace, None, create_only=True)

    @api.get(PREFIX + "/namespaces/{namespace}/{plural}/{name}", summary="Read a resource with its status")
    def read(namespace: str, plural: str, name: str) -> dict:
        try:
            return render(platform.resources.get(_kind(plural), namespace, name))
        except NotFoundError as exc:
            raise HTTPException(404, str(exc)) from None

    @api.put(PREFIX + "/namespaces/{namespace}/{plural}/{name}", summary="Create or replace a resource")
    async def replace(namespace: str, plural: str, name: str, request: Request) -> JSONResponse:
        kind = _kind(plural)
        body = await _json_body(request)
        if body.get("kind") not in (None, kind):
            return JSONResponse(
                {"error": {"message": f'kind: Invalid value: "{body.get("kind")}": this path takes {kind}'}},
                status_code=422,
            )
        return store_resource(body, namespace, name, create_only=False)

    @api.delete(PREFIX + "/namespaces/{namespace}/{plural}/{name}", summary="Delete a resource")
    def delete(namespace: str, plural: str, name: str) -> dict:
        kind = _kind(plural)
        if not platform.store.delete(kind, namespace, name):
            raise HTTPException(404, f'{plural} "{name}" not found in namespace "{namespace}"')
        if kind == "InferenceService":
            key = f"{namespace}/{name}"
            platform.reconciler.desired.pop(key, None)
            platform.events.record(key, "deleted; draining replicas")
        platform.reconciler.kick()
        return {"status": "Success", "details": {"name": name, "namespace": namespace, "kind": plural}}

    @api.get("/api/v1/nodes", summary="Nodes and their GPUs")
    def nodes() -> dict:
        inventory = platform.inventory.to_dict()
        replicas = platform.backend.replicas()
        inventory["replicas"] = sum(1 for r in replicas if r.phase not in ("Pending", "Terminated"))
        inventory["backend"] = "local"
        inventory["pid"] = os.getpid()
        return {"items": [inventory]}

    return api
