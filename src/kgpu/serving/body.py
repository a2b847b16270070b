"""Read a JSON request body with a hard size limit (kgpu.body_limit), answered as the replica's API errors."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from kgpu.body_limit import BodyTooLarge, read_limited
from kgpu.serving.errors import ApiError, bad_request


def too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is larger than the limit of {limit} bytes; send fewer or shorter inputs per request",
        code="request_too_large",
        reason="too_large",
    )


async def read_json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None and not declared.strip().isdigit():
        raise ApiError(400, f"invalid Content-Length header {declared!r}")
    try:
        raw = await read_limited(request, limit)
    except BodyTooLarge:
        raise too_large(limit) from None
    if not raw.strip():
        raise ApiError(400, "request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc


def check_model(body: Any, served_name: str) -> dict[str, Any]:
    """The request object, once it names the model this replica serves (400 without one, 404 for another)."""
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    model = body.get("model")
    if model is None:
        raise bad_request("'model' is required", "model")
    if not isinstance(model, str):
        raise bad_request("'model' must be a string", "model")
    if model != served_name:
        raise ApiError(
            404,
            f"The model '{model}' does not exist; this server serves '{served_name}'",
            param="model",
            code="model_not_found",
            reason="model_not_found",
        )
    return body
