"""Client-facing errors and how they are rendered for each protocol.

Handlers raise `ApiError`; the app renders it as OpenAI's `{"error": {message, type, param, code}}` on /v1
and as the Open Inference Protocol's `{"error": "..."}` on /v2, so every bad input gets a 4xx with a message
that names its cause, in the shape the client library of that protocol expects.
"""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

_OPENAI_TYPES = {
    400: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "server_overloaded",
    503: "server_error",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        reason: str = "bad_request",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.reason = reason  # label for kgpu_request_failures_total
        self.headers = headers or {}


def bad_request(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code="invalid_value" if param else None)


def error_response(path: str, error: ApiError) -> JSONResponse:
    body: dict[str, Any]
    if path.startswith("/v2"):
        body = {"error": error.message}
    else:
        body = {
            "error": {
                "message": error.message,
                "type": _OPENAI_TYPES.get(error.status, "server_error"),
                "param": error.param,
                "code": error.code,
            }
        }
    return JSONResponse(body, status_code=error.status, headers=error.headers)
