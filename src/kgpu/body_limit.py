"""Read an HTTP request body with a hard size limit (replica, gateway and control plane alike).

The limit is checked twice: against Content-Length before reading (a cheap refusal of honest clients)
and against the bytes actually received (a chunked or lying client cannot make the server buffer more).
Each server answers the refusal in its own protocol's error format.
"""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLarge(Exception):
    """The request body is (or declares itself) larger than the limit."""


async def read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.strip().isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)
