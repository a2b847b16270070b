"""OpenAI-compatible embeddings: `POST /v1/embeddings` and `GET /v1/models`.

Inputs are validated by hand rather than with a pydantic union, so each refusal says exactly what was wrong
("input[3] is an empty string") instead of a list of failed union branches.

`dimensions` is accepted only when it equals the model's dimension: this model was not trained for
shortened (Matryoshka) embeddings, so truncating would silently lower quality.
"""

from __future__ import annotations

import base64
import reprlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from kgpu.serving.body import check_model, read_json_body
from kgpu.serving.errors import ApiError, bad_request
from kgpu.serving.runtime import ReplicaRuntime

_INPUT_FORMS = "a non-empty string, an array of strings, an array of token ids or an array of token-id arrays"
_STARTED = int(time.time())


@dataclass(frozen=True)
class EmbeddingsRequest:
    texts: list[str] | None  # exactly one of texts / token_ids is set
    token_ids: list[list[int]] | None
    encoding_format: str
    dimensions: int | None


def _is_token(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _not_a_token(value: Any, where: str) -> ApiError:
    if isinstance(value, float) and abs(value) >= 2**63:
        # The JSON parser reads integers beyond 64 bits as floats: the client may well have sent one.
        return bad_request(f"{where} is a number too large to be a token id of any vocabulary", "input")
    # reprlib: a bounded preview (an input nested 1,000 deep would exhaust repr's recursion).
    return bad_request(f"{where} must be an integer token id, got {reprlib.repr(value)}", "input")


def parse_input(value: Any, max_inputs: int) -> tuple[list[str] | None, list[list[int]] | None]:
    if value is None:
        raise bad_request("'input' is required", "input")
    if isinstance(value, str):
        if not value:
            raise bad_request("'input' is an empty string; it must be " + _INPUT_FORMS, "input")
        return [value], None
    if not isinstance(value, list):
        raise bad_request(f"'input' must be {_INPUT_FORMS}; got {type(value).__name__}", "input")
    if not value:
        raise bad_request("'input' is an empty array; send at least one input", "input")
    if len(value) > max_inputs:
        raise bad_request(f"'input' has {len(value)} items; at most {max_inputs} inputs per request", "input")
    if all(isinstance(item, str) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise bad_request(f"input[{index}] is an empty string", "input")
        return value, None
    if all(_is_token(item) for item in value):
        return None, [value]
    if all(_is_number(item) for item in value):  # token ids, one of them not an integer
        index, item = next((i, item) for i, item in enumerate(value) if not _is_token(item))
        raise _not_a_token(item, f"input[{index}]")
    if all(isinstance(item, list) for item in value):
        for index, item in enumerate(value):
            if not item:
                raise bad_request(f"input[{index}] is an empty token array", "input")
            for position, token in enumerate(item):
                if not _is_token(token):
                    raise _not_a_token(token, f"input[{index}][{position}]")
        return None, value
    kinds = sorted({type(item).__name__ for item in value})
    raise bad_request(f"'input' mixes item types ({', '.join(kinds)}); it must be {_INPUT_FORMS}", "input")


def parse_embeddings_request(body: Any, served_name: str, dim: int, max_inputs: int) -> EmbeddingsRequest:
    body = check_model(body, served_name)
    texts, token_ids = parse_input(body.get("input"), max_inputs)

    # Only a missing or null value means the default: `or` would take 0, "" or {} for "float" too.
    encoding_format = body.get("encoding_format")
    if encoding_format is None:
        encoding_format = "float"
    if encoding_format not in ("float", "base64"):
        raise bad_request(
            f"'encoding_format' must be 'float' or 'base64', got {encoding_format!r}", "encoding_format"
        )
    dimensions = body.get("dimensions")
    if dimensions is not None:
        if not _is_token(dimensions) or dimensions < 1:
            raise bad_request(f"'dimensions' must be a positive integer, got {dimensions!r}", "dimensions")
        if dimensions != dim:
            raise bad_request(
                f"'dimensions' is {dimensions} but this model only produces {dim}-dimensional "
                f"embeddings; omit 'dimensions' or set it to {dim}",
                "dimensions",
            )
    user = body.get("user")
    if user is not None and not isinstance(user, str):
        raise bad_request("'user' must be a string", "user")
    return EmbeddingsRequest(texts, token_ids, encoding_format, dimensions)


def _encode(vector: np.ndarray, encoding_format: str) -> np.ndarray | str:
    if encoding_format == "base64":
        # What the official client decodes: raw little-endian float32, base64.
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector  # serialized by orjson straight from the array


def create_openai_router(runtime: ReplicaRuntime) -> APIRouter:
    router = APIRouter()
    config = runtime.config

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        body = await read_json_body(request, config.max_body_bytes)
        runtime.require_ready()
        parsed = parse_embeddings_request(body, config.served_name, runtime.engine.dim, config.max_inputs)
        if parsed.texts is not None:
            ids, vectors = await runtime.embed_texts(parsed.texts)
        else:
            ids = await runtime.prepare_ids(parsed.token_ids or [], "input")
            vectors = await runtime.embed(ids)
        tokens = sum(len(sequence) for sequence in ids)
        data = [
            {"object": "embedding", "index": index, "embedding": _encode(vector, parsed.encoding_format)}
            for index, vector in enumerate(vectors)
        ]
        payload = {
            "object": "list",
            "data": data,
            "model": config.served_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
        # orjson writes float32 arrays directly: several times faster than json over Python floats,
        # which matters when a response carries 32 x 384 numbers.
        return Response(
            orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    add_models_route(router, config.served_name)
    return router


def add_models_route(router: APIRouter, served_name: str) -> None:
    """`GET /v1/models`: the one model this replica serves (every runtime)."""

    @router.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": served_name, "object": "model", "created": _STARTED, "owned_by": "kgpu"}],
        }
