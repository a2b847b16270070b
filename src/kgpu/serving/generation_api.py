"""OpenAI `POST /v1/chat/completions` and `POST /v1/completions`, answered whole or streamed as server-sent events.

A streamed answer sends each piece as the engine produces it, ends with `data: [DONE]`, and, when the client
asked with `stream_options.include_usage`, a last chunk that carries the token counts. A client that disconnects
mid-answer stops its sequence in the engine: Starlette cancels the response's task, and closing the engine's
iterator cancels the request there, which frees its KV blocks at the next step. A non-streamed request is
watched for a disconnect the same way while it waits for its answer.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from kgpu.serving.body import check_model, read_json_body
from kgpu.serving.errors import ApiError
from kgpu.serving.generation_engine import Delta, GenerationError
from kgpu.serving.generation_params import (
    COMPLETIONS_DEFAULT_MAX_TOKENS,
    ParsedRequest,
    chat_messages,
    check_token_ids,
    completion_prompt,
    parse_common,
)
from kgpu.serving.generation_runtime import GenerationRuntime
from kgpu.serving.openai_api import add_models_route

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

# (delta text, finish reason) -> the choice of one chunk or answer, per endpoint.
ChoiceBuilder = Callable[[str, str | None], dict[str, Any]]


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def sse(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def engine_failure(exc: GenerationError) -> ApiError:
    return ApiError(503, f"generation failed: {exc}; retry", code="engine_error", reason="engine")


async def collect(answer: AsyncIterator[Delta]) -> tuple[str, int, str]:
    """The whole answer: its text, its token count and why it ended."""
    pieces, tokens, finish = [], 0, "length"
    async for delta in answer:
        pieces.append(delta.text)
        tokens += len(delta.token_ids)
        finish = delta.finish_reason or finish
    return "".join(pieces), tokens, finish


async def until_disconnect(request: Request, work: Any) -> Any:
    """Await `work`, cancelling it when the client goes away first (its sequence then leaves the engine)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ApiError(499, "client closed the request", reason="client_closed")


def create_generation_router(runtime: GenerationRuntime) -> APIRouter:
    router = APIRouter()
    config = runtime.config

    async def answer(
        request: Request,
        parsed: ParsedRequest,
        kind: str,
        choice: ChoiceBuilder,
        first: dict[str, Any] | None,
    ) -> Response:
        ident = f"{'chatcmpl' if kind == 'chat.completion' else 'cmpl'}-{uuid.uuid4().hex}"
        created = int(time.time())
        head = {"id": ident, "created": created, "model": config.served_name}
        prompt_tokens = len(parsed.request.prompt_ids)
        stream = runtime.generate(parsed.request)
        if not parsed.stream:
            try:
                text, completion_tokens, finish = await until_disconnect(request, collect(stream))
            except GenerationError as exc:
                raise engine_failure(exc) from exc
            body = {
                **head,
                "object": kind,
                "choices": [choice(text, finish)],
                "usage": _usage(prompt_tokens, completion_tokens),
            }
            return Response(orjson.dumps(body), media_type="application/json")
        # Admission errors (not ready, overloaded) answer as HTTP errors before the stream starts.
        runtime.require_ready()
        runtime.require_capacity()
        chunk_kind = "chat.completion.chunk" if kind == "chat.completion" else kind
        usage_field = {"usage": None} if parsed.include_usage else {}

        async def events() -> AsyncIterator[bytes]:
            completion_tokens = 0
            if first is not None:
                yield sse({**head, "object": chunk_kind, "choices": [first], **usage_field})
            try:
                async for delta in stream:
                    completion_tokens += len(delta.token_ids)
                    chunk = {
                        **head,
                        "object": chunk_kind,
                        "choices": [choice(delta.text, delta.finish_reason)],
                    }
                    yield sse({**chunk, **usage_field})
            except GenerationError as exc:
                yield sse({"error": {"message": f"generation failed: {exc}", "type": "server_error"}})
                return
            finally:
                await stream.aclose()
            if parsed.include_usage:
                yield sse(
                    {
                        **head,
                        "object": chunk_kind,
                        "choices": [],
                        "usage": _usage(prompt_tokens, completion_tokens),
                    }
                )
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers=SSE_HEADERS)

    @router.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = check_model(await read_json_body(request, config.max_body_bytes), config.served_name)
        prompt = completion_prompt(body)
        runtime.require_ready()
        engine = runtime.engine
        if isinstance(prompt, str):
            ids = engine.tokenize(prompt)
        else:
            check_token_ids(prompt, len(engine.tokenizer))
            ids = prompt
        parsed = parse_common(body, ids, engine.context_length, "max_tokens", COMPLETIONS_DEFAULT_MAX_TOKENS)

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}

        return await answer(request, parsed, "text_completion", choice, None)

    @router.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = check_model(await read_json_body(request, config.max_body_bytes), config.served_name)
        messages = chat_messages(body)
        runtime.require_ready()
        engine = runtime.engine
        if not engine.has_chat_template:
            raise ApiError(
                400,
                f"model '{config.served_name}' has no chat template in its tokenizer config; "
                "use /v1/completions with a prompt instead",
                param="messages",
                code="no_chat_template",
            )
        ids = engine.chat_prompt_ids(messages)
        max_name = "max_tokens" if "max_tokens" in body else "max_completion_tokens"
        parsed = parse_common(body, ids, engine.context_length, max_name, None)

        def choice(text: str, finish: str | None) -> dict[str, Any]:
            if not parsed.stream:
                message = {"role": "assistant", "content": text}
                return {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
            delta = {"content": text} if text or finish is None else {}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

        first = {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
        return await answer(request, parsed, "chat.completion", choice, first)

    add_models_route(router, config.served_name)
    return router
