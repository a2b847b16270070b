"""HTTP routes of the gateway: the OpenAI and Open Inference Protocol v2 front door.

The gateway reads only what it needs to route (the `model` field, or the model name
in the v2 path; for generation, `stream` and the request's size) and forwards the body
unchanged; replicas do the validation. Streamed answers pass through as they come.

With a token check (`kgpu server --auth`) every inference call needs a token of the
service's project, sent as `Authorization: Bearer <token>` (what the OpenAI client does
with its `api_key`); a viewer token may call its project's services too. A bare model
name means the token's project; a service of another project answers exactly as a model
that does not exist, so its existence does not leak. The token stays at the gateway.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Protocol
from urllib.parse import quote

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from kgpu import __version__, auth_failures
from kgpu.auth_failures import TooManyFailures
from kgpu.body_limit import BodyTooLarge, read_limited
from kgpu.gateway.disconnect import unless_disconnected
from kgpu.gateway.generation_work import generation_work
from kgpu.gateway.router import ProxyResult, Router
from kgpu.serving.v2_binary import HEADER_LENGTH

# Returns the service key ("namespace/name") for a model name, or None if unknown.
ServiceResolver = Callable[[str], "str | None"]

MAX_BODY_BYTES = 32 * 1024 * 1024
# The client's deadline in milliseconds from arrival: orders requests waiting for a replica.
DEADLINE_HEADER = "x-kgpu-deadline-ms"


class Caller(Protocol):
    """Who a token belongs to (kgpu.controlplane.auth.Principal)."""

    project: str | None

    def can_see(self, namespace: str) -> bool: ...


# Returns the caller of a valid token (and the client's address), or None; raises
# TooManyFailures when the caller has failed too often.
TokenVerifier = Callable[[str, str], "Caller | None"]


def _openai_error(status: int, message: str, code: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}},
        status_code=status,
    )


# What a request whose client disconnected "answers" (nginx's 499): nobody reads it.
_CLIENT_GONE = ProxyResult(499, b"", {})


def _to_response(result: ProxyResult) -> Response:
    if result.stream is None:
        return Response(content=result.body, status_code=result.status, headers=result.headers)
    first, rest = result.body, result.stream

    async def chunks() -> AsyncIterator[bytes]:
        yield first
        async for chunk in rest:
            yield chunk

    headers = {**result.headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(chunks(), status_code=result.status, headers=headers)


def _unauthorized(message: str) -> JSONResponse:
    response = _openai_error(401, message, "invalid_api_key")
    response.headers["www-authenticate"] = "Bearer"
    return response


def _namespace(model: str) -> str:
    return model.rpartition("/")[0] or "default"


# The OpenAI inference routes, called directly by the server's ASGI stack (kgpu.gateway.direct_routes).
OPENAI_INFERENCE_PATHS = ("/v1/embeddings", "/v1/chat/completions", "/v1/completions")

# What the gateway passes through to replicas besides plain JSON (kgpu.serving.v2_binary).
V2_EXTENSIONS = ["binary_tensor_data", "generate"]


def binary_header(request: Request) -> dict[str, str] | None:
    """The binary tensor data extension's header, which the replica needs to read the body."""
    value = request.headers.get(HEADER_LENGTH)
    return None if value is None else {HEADER_LENGTH: value}


def gateway_routes(
    router: Router,
    resolve: ServiceResolver,
    known_models: Callable[[], list[str]],
    verify: TokenVerifier | None = None,
) -> APIRouter:
    """`verify`: check tokens (None: no auth, anyone may call every service)."""
    api = APIRouter(tags=["gateway"])

    async def caller_of(request: Request) -> Caller | JSONResponse | None:
        """The caller, a 401 response, or None when tokens are not checked."""
        if verify is None:
            return None
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthorized(
                "this gateway needs an API token of the service's project: send "
                "`Authorization: Bearer <token>` (the OpenAI client's api_key)"
            )
        address = request.client.host if request.client else ""
        try:
            caller = await run_in_threadpool(verify, token.strip(), address)
        except TooManyFailures as exc:
            await asyncio.sleep(auth_failures.FAILURE_DELAY_S)
            response = _openai_error(429, str(exc), "too_many_failed_token_checks")
            response.headers["retry-after"] = exc.retry_after_header
            return response
        if caller is None:
            await asyncio.sleep(auth_failures.FAILURE_DELAY_S)
            return _unauthorized("invalid API token")
        return caller

    def qualified(model: str, caller: Caller | None) -> str:
        """A bare model name is a service of the caller's project."""
        if caller is not None and caller.project and "/" not in model:
            return f"{caller.project}/{model}"
        return model

    def resolve_for(model: str, caller: Caller | None) -> str | None:
        service = resolve(qualified(model, caller))
        if service is None or (caller is not None and not caller.can_see(service.split("/", 1)[0])):
            return None  # another project's service looks exactly like a missing one
        return service

    def models_for(caller: Caller | None) -> list[str]:
        models = known_models()
        if caller is None:
            return models
        if caller.project is None:  # the cluster admin sees every project's models
            return models
        return sorted(m.rpartition("/")[2] for m in models if _namespace(m) == caller.project)

    def deadline_ms(request: Request) -> tuple[float | None, str | None]:
        """The client's deadline header: (milliseconds or None, error message or None)."""
        text = request.headers.get(DEADLINE_HEADER)
        if text is None:
            return None, None
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not 0 < value < 1e12:  # also rejects nan and inf
            return (
                None,
                f"header {DEADLINE_HEADER} must be a positive number of milliseconds, got {text[:40]!r}",
            )
        return value, None

    async def forward(
        request: Request,
        service: str,
        path: str,
        body: bytes,
        content_type: str,
        deadline: float | None,
        stream: bool,
        work: tuple[int, int],
        extra_headers: dict[str, str] | None = None,
    ) -> Response:
        """Forward to a replica while the client is still there (kgpu.gateway.disconnect)."""
        prompt_tokens, max_tokens = work
        result = await unless_disconnected(
            request,
            router.forward(
                service,
                path,
                body,
                content_type,
                deadline,
                stream=stream,
                prompt_tokens=prompt_tokens,
                max_tokens=max_tokens,
                extra_headers=extra_headers,
            ),
        )
        return _to_response(result or _CLIENT_GONE)

    async def _read_body(request: Request) -> bytes | JSONResponse:
        try:
            return await read_limited(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            return _openai_error(413, f"request body larger than {MAX_BODY_BYTES} bytes", "body_too_large")

    async def openai_request(request: Request, path: str) -> Response:
        caller = await caller_of(request)
        if isinstance(caller, JSONResponse):
            return caller
        deadline, bad_deadline = deadline_ms(request)
        if bad_deadline is not None:
            return _openai_error(400, bad_deadline, "invalid_deadline", DEADLINE_HEADER)
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
        service = resolve_for(model, caller)
        if service is None:
            known = ", ".join(models_for(caller)) or "none"
            return _openai_error(
                404, f"model {model!r} is not served here (known: {known})", "model_not_found", "model"
            )
        if (refusal := router.protocol_refusal(service, "openai")) is not None:
            return _openai_error(400, refusal, "unsupported_protocol", "model")
        served_name = router.upstream_model(service)
        if model != served_name:  # "team-a/minilm": replicas know their service by its plain name
            payload["model"] = served_name
            try:
                body = orjson.dumps(payload)
            except orjson.JSONEncodeError as exc:  # orjson encodes 255 levels of nesting, decodes 1024
                return _openai_error(400, f"request body is nested too deeply: {exc}", "invalid_json")
        stream = payload.get("stream") is True
        work = generation_work(path, payload)
        return await forward(request, service, path, body, "application/json", deadline, stream, work)

    @api.post("/v1/embeddings", summary="Create embeddings (OpenAI-compatible)")
    async def embeddings(request: Request) -> Response:
        return await openai_request(request, "/v1/embeddings")

    @api.post("/v1/chat/completions", summary="Chat completions, streamed or whole (OpenAI-compatible)")
    async def chat_completions(request: Request) -> Response:
        return await openai_request(request, "/v1/chat/completions")

    @api.post("/v1/completions", summary="Text completions, streamed or whole (OpenAI-compatible)")
    async def completions(request: Request) -> Response:
        return await openai_request(request, "/v1/completions")

    @api.get("/v1/models", summary="List served models (OpenAI-compatible)")
    async def list_models(request: Request) -> Response:
        caller = await caller_of(request)
        if isinstance(caller, JSONResponse):
            return caller
        data = [{"id": m, "object": "model", "owned_by": "kgpu"} for m in models_for(caller)]
        return JSONResponse({"object": "list", "data": data})

    async def v2_service(model: str, request: Request) -> str | JSONResponse:
        """The service a v2 request names, or the answer when the caller may not or it speaks no v2."""
        caller = await caller_of(request)
        if isinstance(caller, JSONResponse):
            return caller
        service = resolve_for(model, caller)
        if service is None:
            return JSONResponse({"error": f"model {model!r} is not served here"}, status_code=404)
        if (refusal := router.protocol_refusal(service, "v2")) is not None:
            return JSONResponse({"error": refusal}, status_code=400)
        return service

    async def v2_request(model: str, request: Request, action: str) -> Response:
        service = await v2_service(model, request)
        if isinstance(service, JSONResponse):
            return service
        deadline, bad_deadline = deadline_ms(request)
        if bad_deadline is not None:
            return JSONResponse({"error": bad_deadline}, status_code=400)
        body = await _read_body(request)
        if isinstance(body, JSONResponse):
            return JSONResponse({"error": "request body too large"}, status_code=413)
        path = f"/v2/models/{router.upstream_model(service)}/{action}"
        prompt_tokens, max_tokens = 0, 0
        if not action.endswith("infer"):
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = None  # the replica answers it with its own 400
            if isinstance(payload, dict):
                prompt_tokens, max_tokens = generation_work(path, payload)
        content_type = request.headers.get("content-type", "application/json")
        stream = action == "generate_stream"
        work = (prompt_tokens, max_tokens)
        return await forward(
            request, service, path, body, content_type, deadline, stream, work, binary_header(request)
        )

    @api.post("/v2/models/{model}/infer", summary="Inference (Open Inference Protocol v2)")
    async def v2_infer(model: str, request: Request) -> Response:
        return await v2_request(model, request, "infer")

    @api.post("/v2/models/{model}/versions/{version}/infer", summary="Inference of one model version (v2)")
    async def v2_infer_version(model: str, version: str, request: Request) -> Response:
        return await v2_request(model, request, f"versions/{quote(version, safe='')}/infer")

    @api.get("/v2", summary="Server metadata (Open Inference Protocol v2)")
    async def v2_server_metadata() -> dict:
        return {"name": "kgpu", "version": __version__, "extensions": V2_EXTENSIONS}

    @api.get("/v2/health/live", summary="The gateway is up (v2)")
    async def v2_live() -> Response:
        return Response(status_code=200)

    @api.get("/v2/health/ready", summary="The gateway routes requests (v2)")
    async def v2_ready() -> Response:
        return Response(status_code=200)

    async def v2_model_read(model: str, request: Request, suffix: str) -> Response:
        """Model metadata or readiness: a ready replica answers (a model has no replica ready: 503)."""
        service = await v2_service(model, request)
        if isinstance(service, JSONResponse):
            return service
        path = f"/v2/models/{router.upstream_model(service)}{suffix}"
        result = await router.read(service, path)
        if result.status != 200 or suffix.endswith("/ready"):
            return _to_response(result)
        # The replica answers with the name it knows; the client asked by the service's.
        try:
            metadata = orjson.loads(result.body)
        except orjson.JSONDecodeError:  # a command runtime's own server may answer anything
            return JSONResponse(
                {"error": f"model {model!r}: its server answered metadata that is not JSON"}, 502
            )
        if isinstance(metadata, dict):
            metadata["name"] = model
        return JSONResponse(metadata)

    @api.get("/v2/models/{model}", summary="Model metadata (v2)")
    async def v2_model_metadata(model: str, request: Request) -> Response:
        return await v2_model_read(model, request, "")

    @api.get("/v2/models/{model}/ready", summary="Model readiness (v2)")
    async def v2_model_ready(model: str, request: Request) -> Response:
        return await v2_model_read(model, request, "/ready")

    @api.get("/v2/models/{model}/versions/{version}", summary="Model version metadata (v2)")
    async def v2_model_version_metadata(model: str, version: str, request: Request) -> Response:
        return await v2_model_read(model, request, f"/versions/{quote(version, safe='')}")

    @api.get("/v2/models/{model}/versions/{version}/ready", summary="Model version readiness (v2)")
    async def v2_model_version_ready(model: str, version: str, request: Request) -> Response:
        return await v2_model_read(model, request, f"/versions/{quote(version, safe='')}/ready")

    @api.post(
        "/v2/models/{model}/generate", summary="Text generation (Open Inference Protocol generate extension)"
    )
    async def v2_generate(model: str, request: Request) -> Response:
        return await v2_request(model, request, "generate")

    @api.post("/v2/models/{model}/generate_stream", summary="Streamed text generation (server-sent events)")
    async def v2_generate_stream(model: str, request: Request) -> Response:
        return await v2_request(model, request, "generate_stream")

    return api
