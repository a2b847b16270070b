"""HTTP routes of the gateway: the OpenAI and Open Inference Protocol v2 front door.

The gateway reads only what it needs to route (the `model` field, or the model name
in the v2 path) and forwards the body unchanged; replicas do the validation.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from kgpu.gateway.router import ProxyResult, Router

# Returns the service key ("namespace/name") for a model name, or None if unknown.
ServiceResolver = Callable[[str], "str | None"]

MAX_BODY_BYTES = 32 * 1024 * 1024


def _openai_error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}},
        status_code=status,
    )


def _to_response(result: ProxyResult) -> Response:
    return Response(content=result.body, status_code=result.status, headers=result.headers)


def gateway_routes(
    router: Router, resolve: ServiceResolver, known_models: Callable[[], list[str]]
) -> APIRouter:
    api = APIRouter(tags=["gateway"])

    async def _read_body(request: Request) -> bytes | JSONResponse:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            return _openai_error(413, f"request body larger than {MAX_BODY_BYTES} bytes", "body_too_large")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _openai_error(413, f"request body larger than {MAX_BODY_BYTES} bytes", "body_too_large")
        return body

    @api.post("/v1/embeddings", summary="Create embeddings (OpenAI-compatible)")
    async def embeddings(request: Request) -> Response:
        body = await _read_body(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return _openai_error(400, f"request body is not valid JSON: {exc}", "invalid_json")
        if not isinstance(payload, dict):
            return _openai_error(400, "request body must be a JSON object", "invalid_type")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            return _openai_error(
                400, "'model' is required: the name of a kgpu service", "missing_model", "model"
            )
        service = resolve(model)
        if service is None:
            known = ", ".join(known_models()) or "none"
            return _openai_error(
                404, f"model {model!r} is not served here (known: {known})", "model_not_found", "model"
            )
        served_name = service.split("/", 1)[1]
        if model != served_name:  # "team-a/minilm": replicas know their service by its plain name
            payload["model"] = served_name
            body = orjson.dumps(payload)
        result = await router.forward(service, "/v1/embeddings", body, "application/json")
        return _to_response(result)

    @api.get("/v1/models", summary="List served models (OpenAI-compatible)")
    async def list_models() -> dict:
        return {
            "object": "list",
            "data": [{"id": m, "object": "model", "owned_by": "kgpu"} for m in known_models()],
        }

    @api.post("/v2/models/{model}/infer", summary="Inference (Open Inference Protocol v2)")
    async def v2_infer(model: str, request: Request) -> Response:
        service = resolve(model)
        if service is None:
            return JSONResponse({"error": f"model {model!r} is not served here"}, status_code=404)
        body = await _read_body(request)
        if isinstance(body, JSONResponse):
            return JSONResponse({"error": "request body too large"}, status_code=413)
        result = await router.forward(
            service,
            f"/v2/models/{service.split('/', 1)[1]}/infer",
            body,
            request.headers.get("content-type", "application/json"),
        )
        return _to_response(result)

    return api
