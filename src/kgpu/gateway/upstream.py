"""The gateway's HTTP client towards replicas, for whole answers and for streamed ones.

aiohttp rather than httpx here: this is the hot path of every request, and at
hundreds of concurrent requests httpx's pure-Python connection pool costs more
CPU per request than the model does for a short sentence on a GPU; aiohttp's
pool and C HTTP parser keep the proxy hop cheap. Whole answers from http://
replicas take a leaner hop still (`GatewayUpstream`, kgpu.gateway.keepalive_client).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from kgpu.gateway.keepalive_client import ConnectionFailed, KeepAliveClient
from kgpu.serving.gateway_secret import GATEWAY_SECRET_HEADER, origin_of, replica_secret

# The binary tensor data extension's header (kgpu.serving.v2_binary) travels with its body both ways.
PASS_HEADERS = ("content-type", "retry-after", "inference-header-content-length")


class ReplicaGone(Exception):
    """The replica could not be reached or dropped the connection: retrying elsewhere is safe."""


_STREAM_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


@dataclass
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes  # the whole body; for a stream, its first chunk
    # The rest of a streamed answer (server-sent events), chunk by chunk as the replica sends them; it raises
    # ReplicaGone if the replica fails on the way. None when `body` is the whole answer.
    rest: AsyncIterator[bytes] | None = None


class Upstream(Protocol):
    async def post(
        self, url: str, body: bytes, content_type: str, extra_headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse: ...

    async def post_streaming(
        self, url: str, body: bytes, content_type: str, extra_headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        """Like `post`, but a 200 event stream comes back after its first chunk, with the rest to follow."""
        ...

    async def get(self, url: str) -> UpstreamResponse: ...

    async def close(self) -> None: ...


def _headers(url: str, content_type: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # The replica's own secret (kgpu.serving.gateway_secret): a replica kgpu started answers no one else.
    return {
        **(extra or {}),
        "content-type": content_type,
        GATEWAY_SECRET_HEADER: replica_secret(origin_of(url)),
    }


class AiohttpUpstream:
    def __init__(self, timeout_s: float = 300.0, connect_timeout_s: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        # A stream may last longer than any whole answer: what bounds it is silence between chunks.
        self._stream_timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_read=timeout_s
        )
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection limit: the gateway's own admission control bounds concurrency.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False
            )
        return self._session

    async def post(
        self, url: str, body: bytes, content_type: str, extra_headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        try:
            headers = _headers(url, content_type, extra_headers)
            async with self._client().post(url, data=body, headers=headers) as response:
                payload = await response.read()
                headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in PASS_HEADERS}
                return UpstreamResponse(response.status, headers, payload)
        except _STREAM_ERRORS as exc:
            raise ReplicaGone(f"{type(exc).__name__}: {exc}") from exc

    async def post_streaming(
        self, url: str, body: bytes, content_type: str, extra_headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        response: aiohttp.ClientResponse | None = None
        try:
            response = await self._client().post(
                url,
                data=body,
                headers=_headers(url, content_type, extra_headers),
                timeout=self._stream_timeout,
            )
            headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in PASS_HEADERS}
            if response.status != 200 or not headers.get("content-type", "").startswith("text/event-stream"):
                payload = await response.read()
                response.release()
                return UpstreamResponse(response.status, headers, payload)
            # The first chunk is read before the answer is passed on: until a byte reaches the client, a
            # replica that fails can still be replaced by another one.
            first = await response.content.readany()
            if not first:
                raise aiohttp.ClientPayloadError("the replica closed the stream before its first byte")
        except _STREAM_ERRORS as exc:
            if response is not None:
                response.close()
            raise ReplicaGone(f"{type(exc).__name__}: {exc}") from exc
        return UpstreamResponse(response.status, headers, first, _rest_of(response))

    async def get(self, url: str) -> UpstreamResponse:
        """A read (v2 model metadata) from one replica."""
        try:
            async with self._client().get(url, headers=_headers(url, "application/json")) as response:
                payload = await response.read()
                headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in PASS_HEADERS}
                return UpstreamResponse(response.status, headers, payload)
        except _STREAM_ERRORS as exc:
            raise ReplicaGone(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class GatewayUpstream(AiohttpUpstream):
    """Whole answers from http:// replicas over kgpu.gateway.keepalive_client (the leaner hop);
    streams, reads and any other scheme on aiohttp's client."""

    def __init__(self, timeout_s: float = 300.0, connect_timeout_s: float = 5.0) -> None:
        super().__init__(timeout_s, connect_timeout_s)
        self._keepalive = KeepAliveClient(timeout_s, connect_timeout_s, pass_headers=PASS_HEADERS)

    async def post(
        self, url: str, body: bytes, content_type: str, extra_headers: Mapping[str, str] | None = None
    ) -> UpstreamResponse:
        if not url.startswith("http://"):
            return await super().post(url, body, content_type, extra_headers)
        try:
            status, headers, payload = await self._keepalive.post(
                url, body, _headers(url, content_type, extra_headers)
            )
        except ConnectionFailed as exc:
            raise ReplicaGone(str(exc)) from exc
        return UpstreamResponse(status, headers, payload)

    async def close(self) -> None:
        self._keepalive.close()
        await super().close()


async def _rest_of(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The chunks after the first; stopping early (the client left) closes the connection, so the replica
    sees the disconnect and stops generating."""
    finished = False
    try:
        async for chunk in response.content.iter_any():
            yield chunk
        finished = True
    except _STREAM_ERRORS as exc:
        raise ReplicaGone(f"{type(exc).__name__}: {exc}") from exc
    finally:
        if finished:
            response.release()
        else:
            response.close()
