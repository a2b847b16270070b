"""Open Inference Protocol v2 (KServe / Triton): health, metadata and `infer` with a BYTES text input.

The model takes one BYTES tensor of texts (any shape; its elements are the inputs, row-major) and returns
one FP32 tensor `embedding` of shape [n, dim], as JSON or with the binary tensor data extension
(kgpu.serving.v2_binary). Its one version is "1": `/v2/models/{name}/versions/1/...` are the same routes.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from kgpu import __version__
from kgpu.body_limit import BodyTooLarge, read_limited
from kgpu.serving.body import too_large
from kgpu.serving.errors import ApiError, bad_request
from kgpu.serving.runtime import ReplicaRuntime
from kgpu.serving.v2_binary import (
    BINARY_CONTENT_TYPE,
    HEADER_LENGTH,
    attach_binary_inputs,
    encode_response,
    header_length,
    split_body,
    wants_binary,
)

INPUT_NAME = "text"
OUTPUT_NAME = "embedding"
MODEL_VERSION = "1"


def check_version(version: str) -> None:
    if version != MODEL_VERSION:
        raise ApiError(404, f"model version {version!r} is not served; the one version is {MODEL_VERSION!r}")


def _flatten(data: Any, max_depth: int) -> list[Any] | None:
    """Elements in row-major order, or None when lists nest deeper than `max_depth`.

    Iterative: JSON may nest about a thousand levels, past Python's recursion limit.
    """
    flat: list[Any] = []
    end = object()
    stack = [iter([data])]
    while stack:
        item = next(stack[-1], end)
        if item is end:
            stack.pop()
        elif isinstance(item, list):
            if len(stack) > max_depth:
                return None
            stack.append(iter(item))
        else:
            flat.append(item)
    return flat


def _elements(shape: list[int], cap: int) -> int:
    """Elements of a tensor of this shape, or cap + 1 when more: a full product of a long shape of large
    dimensions takes long to compute and has too many digits to print."""
    if 0 in shape:
        return 0
    elements = 1
    for dim in shape:
        elements *= dim
        if elements > cap:
            return cap + 1
    return elements


def parse_infer_texts(body: Any, max_inputs: int) -> list[str]:
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise bad_request(f"'inputs' must be a list with exactly one tensor (the BYTES input '{INPUT_NAME}')")
    tensor = inputs[0]
    name = tensor.get("name", INPUT_NAME)
    if tensor.get("datatype") != "BYTES":
        raise bad_request(f"input '{name}': datatype must be BYTES (texts), got {tensor.get('datatype')!r}")
    shape = tensor.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad_request(f"input '{name}': shape must be a list of non-negative integers, got {shape!r}")
    # Data is flat or nested like the shape (KServe's row-major tensor data), never deeper.
    texts = _flatten(tensor.get("data"), max(1, len(shape)))
    if texts is None:
        raise bad_request(f"input '{name}': data is nested deeper than its shape {shape} has dimensions")
    elements = _elements(shape, max_inputs)
    if elements > max_inputs:
        raise bad_request(
            f"input '{name}': shape {shape} holds more than {max_inputs} elements; at most {max_inputs} per request"
        )
    if len(texts) != elements:
        raise bad_request(
            f"input '{name}': shape {shape} holds {elements} elements but data has {len(texts)}"
        )
    if not texts:
        raise bad_request(f"input '{name}' is empty; send at least one text")
    if len(texts) > max_inputs:
        raise bad_request(f"input '{name}' has {len(texts)} texts; at most {max_inputs} per request")
    for index, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise bad_request(f"input '{name}': element {index} must be a non-empty string, got {text!r}")
    outputs = body.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
            raise bad_request("'outputs' must be a list of objects with a 'name'")
        unknown = [o.get("name") for o in outputs if o.get("name") != OUTPUT_NAME]
        if unknown:
            raise bad_request(f"unknown output(s) {unknown}; this model has one output '{OUTPUT_NAME}'")
    return texts


def create_health_router(runtime: Any, extensions: list[str]) -> APIRouter:
    """Liveness, readiness and server metadata: the same for every runtime (anything with `ready` and `config`)."""
    router = APIRouter()
    served_name = runtime.config.served_name

    @router.get("/v2/health/live")
    async def live() -> Response:
        return Response(status_code=200)

    @router.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(status_code=200 if runtime.ready else 503)

    @router.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "kgpu", "version": __version__, "extensions": extensions}

    @router.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        if name != served_name:
            raise ApiError(
                404,
                f"model '{name}' is not served here; this server serves '{served_name}'",
                reason="model_not_found",
            )
        return Response(status_code=200 if runtime.ready else 503)

    @router.get("/v2/models/{name}/versions/{version}/ready")
    async def model_version_ready(name: str, version: str) -> Response:
        check_version(version)
        return await model_ready(name)

    return router


def create_v2_router(runtime: ReplicaRuntime) -> APIRouter:
    router = APIRouter()
    config = runtime.config

    def check_model(name: str) -> None:
        if name != config.served_name:
            raise ApiError(
                404,
                f"model '{name}' is not served here; this server serves '{config.served_name}'",
                reason="model_not_found",
            )

    @router.get("/v2/models/{name}")
    async def model_metadata(name: str) -> dict[str, Any]:
        check_model(name)
        dim = runtime.engine.dim if runtime.engine is not None else -1  # unknown until loaded
        return {
            "name": config.served_name,
            "versions": [MODEL_VERSION],
            "platform": "pytorch",
            "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, dim]}],
        }

    @router.get("/v2/models/{name}/versions/{version}")
    async def model_version_metadata(name: str, version: str) -> dict[str, Any]:
        check_version(version)
        return await model_metadata(name)

    async def read_request(request: Request) -> Any:
        """The request's JSON, with any binary input data put in its tensors' `data`."""
        try:
            raw = await read_limited(request, config.max_body_bytes)
        except BodyTooLarge:
            raise too_large(config.max_body_bytes) from None
        length = header_length(request.headers.get(HEADER_LENGTH), len(raw))
        if not raw[: length or None].strip():
            raise ApiError(400, "request body is empty; send a JSON object")
        body, binary = split_body(raw, length)
        attach_binary_inputs(body, binary)
        return body

    @router.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> Response:
        check_model(name)
        body = await read_request(request)
        runtime.require_ready()
        texts = parse_infer_texts(body, config.max_inputs)
        _, vectors = await runtime.embed_texts(texts)
        response: dict[str, Any] = {
            "model_name": config.served_name,
            "model_version": MODEL_VERSION,
            "outputs": [
                {
                    "name": OUTPUT_NAME,
                    "datatype": "FP32",
                    "shape": list(vectors.shape),
                    "data": vectors.ravel(),
                }
            ],
        }
        if isinstance(body, dict) and "id" in body:
            response["id"] = body["id"]
        # orjson straight from the array: FastAPI's encoder would walk every float of a large output.
        binary = {OUTPUT_NAME: vectors} if wants_binary(body, OUTPUT_NAME) else {}
        content, length = encode_response(response, binary)
        if length is None:
            return Response(content, media_type="application/json")
        return Response(content, media_type=BINARY_CONTENT_TYPE, headers={HEADER_LENGTH: str(length)})

    @router.post("/v2/models/{name}/versions/{version}/infer")
    async def infer_version(name: str, version: str, request: Request) -> Response:
        check_version(version)
        return await infer(name, request)

    return router
