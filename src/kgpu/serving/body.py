"""Read a JSON request body with a hard size limit.

The limit is checked twice: against Content-Length before reading (cheap refusal of honest clients) and
against the bytes actually received (a chunked or lying client cannot make the server buffer more).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request

from kgpu.serving.errors import ApiError


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body is larger than the limit of {limit} bytes; send fewer or shorter inputs per request",
        code="request_too_large",
        reason="too_large",
    )


async def read_json_body(request: Request, limit: int) -> Any:
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, f"invalid Content-Length header {declared!r}")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        raise ApiError(400, "request body is empty; send a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from exc
