"""OpenAPI pieces of the control-plane routes: request bodies, error shapes, resource schemas.

The resource routes read their bodies themselves (JSON or YAML, validated by `kgpu.api`
with Kubernetes-style field paths), so FastAPI cannot infer the documents; they are
described here and the resource schemas from the pydantic models are added to the
document's components by `install_resource_schemas`.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from kgpu.api.models import Cluster, InferenceService, NodePool

REF = "#/components/schemas/{model}"
RESOURCE_MODELS = (InferenceService, NodePool, Cluster)
ANY_RESOURCE = {"anyOf": [{"$ref": REF.format(model=m.__name__)} for m in RESOURCE_MODELS]}


class FieldErrorBody(BaseModel):
    path: str = Field(description="Kubernetes-style path of the offending field, e.g. spec.model.uri")
    message: str


class ErrorDetail(BaseModel):
    message: str = Field(description="One line per problem")
    reason: str | None = Field(None, description="Invalid, Conflict, NotFound, Expired, ...")
    fields: list[FieldErrorBody] | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class DetailBody(BaseModel):
    detail: str | list[Any]


_ERRORS = {
    400: ("The body is not JSON/YAML, or not one object", ErrorBody | DetailBody),
    404: ("Unknown resource type, or no resource of that name", ErrorBody | DetailBody),
    409: ("Conflict: stale metadata.resourceVersion, or a create of an existing name", ErrorBody),
    410: ("Watch: the resourceVersion is older than the server can resume from; list again", ErrorBody),
    413: ("The body is larger than the API server's limit (3 MiB)", DetailBody),
    415: ("PATCH with a media type other than application/merge-patch+json", ErrorBody),
    422: ("Invalid resource or parameter; `fields` names each offending path", ErrorBody),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"description": _ERRORS[code][0], "model": _ERRORS[code][1]} for code in codes}


RESOURCE_BODY = {
    "required": True,
    "description": "One resource (InferenceService, NodePool or Cluster) as JSON or YAML",
    "content": {"application/json": {"schema": ANY_RESOURCE}, "application/yaml": {"schema": ANY_RESOURCE}},
}

MERGE_PATCH_BODY = {
    "required": True,
    "description": (
        "A JSON merge patch (RFC 7386): objects merge, null removes a key. The result is validated like a "
        "replace; a metadata.resourceVersion in the patch makes it conditional (409 when stale)."
    ),
    "content": {
        "application/merge-patch+json": {"schema": {"type": "object"}},
        "application/json": {"schema": {"type": "object"}},
    },
}

RESOURCE_RESPONSE = {
    200: {
        "description": "The resource with server-owned metadata (uid, resourceVersion) and its status",
        "content": {"application/json": {"schema": {"type": "object"}}},
    }
}

WATCH_RESPONSE = {
    200: {
        "description": (
            "A list, or with watch=true a text/event-stream of events: `event:` ADDED, MODIFIED, DELETED "
            "(or ERROR), `id:` the resourceVersion, `data:` {type, object}"
        ),
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "text/event-stream": {"schema": {"type": "string"}},
        },
    }
}


def _resource_schemas() -> dict[str, Any]:
    _, schema = models_json_schema([(m, "validation") for m in RESOURCE_MODELS], ref_template=REF)
    defs = schema["$defs"]
    # The server owns these and accepts them back (so `get -o yaml` output applies again).
    server_owned = {
        "uid": {"type": "string", "readOnly": True},
        "resourceVersion": {"type": "string", "description": "Set it to make a write conditional"},
        "creationTimestamp": {"type": "number", "readOnly": True},
    }
    defs["ObjectMeta"].setdefault("properties", {}).update(server_owned)
    for model in RESOURCE_MODELS:
        # status is computed by the server and ignored in writes.
        defs[model.__name__].setdefault("properties", {})["status"] = {
            "anyOf": [{"type": "object"}, {"type": "null"}]
        }
    return defs


def install_resource_schemas(app: FastAPI) -> None:
    """Make `app.openapi()` include the resource schemas the request bodies refer to."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=app.description,
                routes=app.routes,
            )
            document.setdefault("components", {}).setdefault("schemas", {}).update(_resource_schemas())
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi
