"""The Open Inference Protocol's binary tensor data extension, as Triton and KServe serve it.

A request or response whose `Inference-Header-Content-Length` header is N carries its JSON header in
the first N bytes of the body and the tensors' raw data after it, in the order of the tensors whose
`parameters.binary_data_size` says how many bytes each takes. BYTES elements are each a 4-byte
little-endian length followed by the bytes; numbers are little-endian in row-major order. Outputs are
sent this way when an output asks (`parameters.binary_data: true`) or the request does
(`parameters.binary_data_output: true`, what `tritonclient` sends when it names no outputs).

Written here rather than imported: the codecs that exist live in `tritonclient.utils`, a client package
(with gevent) that a server should not need; the format is these few lines.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson

from kgpu.serving.errors import bad_request

HEADER_LENGTH = "inference-header-content-length"
BINARY_CONTENT_TYPE = "application/octet-stream"
# Fixed-width datatypes of the protocol and their little-endian numpy types.
NUMPY_TYPES = {
    "BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
    "FP16": "<f2", "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip


def header_length(value: str | None, body_length: int) -> int | None:
    """The JSON header's length from the request's header, or None for a plain JSON body."""
    if value is None:
        return None
    digits = value.strip()
    # isdigit() alone accepts digits int() refuses (a latin-1 header's "²"): ASCII digits only.
    if not (digits.isascii() and digits.isdigit()) or int(digits) > body_length:
        raise bad_request(
            f"Inference-Header-Content-Length {value!r} must be a byte count within the body's {body_length}"
        )
    return int(digits)


def split_body(raw: bytes, length: int | None) -> tuple[Any, bytes]:
    """(the JSON header, the binary data after it)."""
    head, binary = (raw, b"") if length is None else (raw[:length], raw[length:])
    try:
        return orjson.loads(head), binary
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"request header is not valid JSON: {exc}") from exc


def decode_bytes_elements(data: bytes, name: str) -> list[bytes]:
    """BYTES elements from their length-prefixed serialization."""
    out: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise bad_request(f"input '{name}': binary BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + size > len(data):
            raise bad_request(f"input '{name}': binary BYTES element of {size} bytes runs past the data")
        out.append(data[offset : offset + size])
        offset += size
    return out


def encode_bytes_elements(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def attach_binary_inputs(body: Any, binary: bytes) -> None:
    """Put each binary input's elements into its `data`, flat, as the JSON form would carry them."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        return
    offset = 0
    for tensor in body["inputs"]:
        if not isinstance(tensor, dict):
            continue
        parameters = tensor.get("parameters") or {}
        size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
        if size is None:
            continue
        name = tensor.get("name", "")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise bad_request(
                f"input '{name}': binary_data_size {size!r} does not fit the {len(binary)} bytes sent"
            )
        chunk = binary[offset : offset + size]
        offset += size
        datatype = tensor.get("datatype")
        if datatype == "BYTES":
            tensor["data"] = [_text(e, name) for e in decode_bytes_elements(chunk, name)]
        elif datatype in NUMPY_TYPES:
            tensor["data"] = np.frombuffer(chunk, dtype=NUMPY_TYPES[datatype]).tolist()
        else:
            raise bad_request(f"input '{name}': unknown datatype {datatype!r}")
    if offset != len(binary):
        raise bad_request(
            f"{len(binary) - offset} bytes of binary data follow the inputs that declare theirs"
        )


def _text(element: bytes, name: str) -> str:
    try:
        return element.decode()
    except UnicodeDecodeError:
        raise bad_request(f"input '{name}': BYTES elements must be UTF-8 text") from None


def wants_binary(body: Any, output: str) -> bool:
    """Whether the request asks for `output` in binary (per output, or for all of them)."""
    if not isinstance(body, dict):
        return False
    for requested in body.get("outputs") or []:
        if isinstance(requested, dict) and requested.get("name") == output:
            parameters = requested.get("parameters") or {}
            if isinstance(parameters, dict) and "binary_data" in parameters:
                return parameters["binary_data"] is True
    parameters = body.get("parameters") or {}
    return isinstance(parameters, dict) and parameters.get("binary_data_output") is True


def encode_response(
    response: dict[str, Any], binary_outputs: dict[str, np.ndarray]
) -> tuple[bytes, int | None]:
    """(body, header length or None): outputs named in `binary_outputs` travel as raw bytes."""
    if not binary_outputs:
        return orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY), None
    blobs = []
    for output in response["outputs"]:
        array = binary_outputs.get(output["name"])
        if array is None:
            continue
        blob = np.ascontiguousarray(array, dtype=NUMPY_TYPES[output["datatype"]]).tobytes()
        output.pop("data", None)
        output["parameters"] = {**output.get("parameters", {}), "binary_data_size": len(blob)}
        blobs.append(blob)
    head = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    return head + b"".join(blobs), len(head)
