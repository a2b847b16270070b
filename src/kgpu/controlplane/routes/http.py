"""What every control-plane handler shares: paths, bodies in and out, error shapes.

Errors carry `{"error": {"message", "reason", "fields"}}` like the API's validation errors,
so a client reads one shape whatever went wrong.
"""

from __future__ import annotations

import json

import orjson
import yaml
from fastapi import HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from kgpu import API_VERSION
from kgpu.api.errors import FieldError, ResourceValidationError
from kgpu.api.io import json_loads_strict, safe_load
from kgpu.body_limit import BodyTooLarge, read_limited
from kgpu.controlplane.resources import KIND_BY_PLURAL

PREFIX = f"/apis/{API_VERSION}"
# The Kubernetes API server's limit for a request body: a resource is kilobytes; without a limit one
# request could make the server hold (and store, and list) anything up to its memory.
MAX_BODY_BYTES = 3 * 1024 * 1024
# YAML bodies are parsed far more slowly than JSON (libyaml: about a second per MiB on a busy core,
# the pure-Python parser five times that): a lower limit bounds the time one request can take.
MAX_YAML_BODY_BYTES = 512 * 1024

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


def kind_of(plural: str) -> str:
    try:
        return KIND_BY_PLURAL[plural]
    except KeyError:
        known = ", ".join(sorted(KIND_BY_PLURAL))
        raise HTTPException(
            404, f'the server does not have resource type "{plural}" (known: {known})'
        ) from None


async def read_body(request: Request) -> bytes:
    """The body, refused past MAX_BODY_BYTES whether it is declared (Content-Length) or streamed."""
    try:
        return await read_limited(request, MAX_BODY_BYTES)
    except BodyTooLarge:
        raise HTTPException(
            413, f"request body is larger than the limit of {MAX_BODY_BYTES} bytes; a resource is far smaller"
        ) from None


async def json_body(request: Request) -> dict:
    raw = await read_body(request)
    is_yaml = "yaml" in request.headers.get("content-type", "")
    if is_yaml and len(raw) > MAX_YAML_BODY_BYTES:
        raise HTTPException(
            413,
            f"a YAML request body is limited to {MAX_YAML_BODY_BYTES} bytes (JSON to {MAX_BODY_BYTES}); "
            "send a large resource as JSON",
        )
    try:
        # YAML takes far longer to parse than JSON: in a worker thread, so no route waits for it.
        body = await run_in_threadpool(safe_load, raw) if is_yaml else json_loads_strict(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise HTTPException(400, f"request body is not valid JSON/YAML: {exc}") from None
    except RecursionError:
        raise HTTPException(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise HTTPException(400, "request body must be one resource object")
    return body


def kind_mismatch(body: dict, kind: str) -> JSONResponse | None:
    if body.get("kind") in (None, kind):
        return None
    message = f'Invalid value: "{body.get("kind")}": this path takes {kind}'
    return error_response(422, "Invalid", f"kind: {message}", [FieldError("kind", message)])


def sse(event: str, data: dict, event_id: int | None = None) -> bytes:
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
