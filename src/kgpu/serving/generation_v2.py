"""The Open Inference Protocol's generate extension, as KServe and Triton serve it.

`POST /v2/models/{name}/generate` takes `{"text_input": ..., "parameters": {...}}` and answers
`{"model_name", "model_version", "text_output"}`; `/generate_stream` sends the same objects as server-sent
events, one per piece of the answer. Parameters are the OpenAI ones (max_tokens, temperature, top_p, seed,
stop), validated by the same rules; the last object also says why the answer ended and counts its tokens.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from kgpu.serving.body import read_json_body
from kgpu.serving.errors import ApiError, bad_request
from kgpu.serving.generation_api import SSE_HEADERS, collect, engine_failure, sse, until_disconnect
from kgpu.serving.generation_engine import GenerationError
from kgpu.serving.generation_params import ParsedRequest, parse_common
from kgpu.serving.generation_runtime import GenerationRuntime

PARAMETERS = ("max_tokens", "temperature", "top_p", "seed", "stop")
_DEFAULT_MAX_TOKENS = 64


def parse_generate(body: Any, tokenize: Any, context: int, stream: bool) -> ParsedRequest:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    for key in body:
        if key not in ("text_input", "parameters", "id"):
            raise bad_request(f"unknown field '{key}'; send 'text_input' and 'parameters'", key)
    text = body.get("text_input")
    if not isinstance(text, str) or not text:
        raise bad_request("'text_input' must be a non-empty string", "text_input")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise bad_request("'parameters' must be an object", "parameters")
    for key in parameters:
        if key not in PARAMETERS:
            raise bad_request(
                f"unknown parameter 'parameters.{key}'; supported: {', '.join(PARAMETERS)}", key
            )
    return parse_common(
        {**parameters, "stream": stream}, tokenize(text), context, "max_tokens", _DEFAULT_MAX_TOKENS
    )


def create_generate_router(runtime: GenerationRuntime) -> APIRouter:
    router = APIRouter()
    config = runtime.config

    async def parsed_for(name: str, request: Request, stream: bool) -> tuple[ParsedRequest, dict[str, Any]]:
        if name != config.served_name:
            raise ApiError(
                404,
                f"model '{name}' is not served here; this server serves '{config.served_name}'",
                reason="model_not_found",
            )
        body = await read_json_body(request, config.max_body_bytes)
        runtime.require_ready()
        engine = runtime.engine
        parsed = parse_generate(body, engine.tokenize, engine.context_length, stream)
        head = {"model_name": config.served_name, "model_version": "1"}
        if isinstance(body, dict) and "id" in body:
            head["id"] = body["id"]
        return parsed, head

    def ending(parsed: ParsedRequest, generated: int, finish: str) -> dict[str, Any]:
        return {
            "finish_reason": finish,
            "prompt_tokens": len(parsed.request.prompt_ids),
            "generated_tokens": generated,
        }

    @router.post("/v2/models/{name}/generate")
    async def generate(name: str, request: Request) -> Response:
        parsed, head = await parsed_for(name, request, stream=False)
        try:
            text, generated, finish = await until_disconnect(
                request, collect(runtime.generate(parsed.request))
            )
        except GenerationError as exc:
            raise engine_failure(exc) from exc
        body = {**head, "text_output": text, **ending(parsed, generated, finish)}
        return Response(orjson.dumps(body), media_type="application/json")

    @router.post("/v2/models/{name}/generate_stream")
    async def generate_stream(name: str, request: Request) -> Response:
        parsed, head = await parsed_for(name, request, stream=True)
        runtime.require_capacity()
        answer = runtime.generate(parsed.request)

        async def events() -> AsyncIterator[bytes]:
            generated = 0
            try:
                async for delta in answer:
                    generated += len(delta.token_ids)
                    event = {**head, "text_output": delta.text}
                    if delta.finish_reason is not None:
                        event.update(ending(parsed, generated, delta.finish_reason))
                    yield sse(event)
            except GenerationError as exc:
                yield sse({"error": f"generation failed: {exc}"})
            finally:
                await answer.aclose()

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    return router
