"""The gateway's HTTP client towards replicas.

aiohttp rather than httpx here: this is the hot path of every request, and at
hundreds of concurrent requests httpx's pure-Python connection pool costs more
CPU per request than the model does for a short sentence on a GPU; aiohttp's
pool and C HTTP parser keep the proxy hop cheap.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import aiohttp

PASS_HEADERS = ("content-type", "retry-after")


class ReplicaGone(Exception):
    """The replica could not be reached or dropped the connection: retrying elsewhere is safe."""


@dataclass
class UpstreamResponse:
    status: int
    headers: dict[str, str]
    body: bytes


class Upstream(Protocol):
    async def post(self, url: str, body: bytes, content_type: str) -> UpstreamResponse: ...

    async def close(self) -> None: ...


class AiohttpUpstream:
    def __init__(self, timeout_s: float = 300.0, connect_timeout_s: float = 5.0) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=connect_timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # No connection limit: the gateway's own admission control bounds concurrency.
            connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30.0)
            self._session = aiohttp.ClientSession(
                connector=connector, timeout=self._timeout, auto_decompress=False
            )
        return self._session

    async def post(self, url: str, body: bytes, content_type: str) -> UpstreamResponse:
        try:
            async with self._client().post(
                url, data=body, headers={"content-type": content_type}
            ) as response:
                payload = await response.read()
                headers = {k.lower(): v for k, v in response.headers.items() if k.lower() in PASS_HEADERS}
                return UpstreamResponse(response.status, headers, payload)
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError) as exc:
            raise ReplicaGone(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
