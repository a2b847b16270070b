"""bench.proxy_floor's bare proxies forward like the gateway: the body there, the answer back."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bench.proxy_floor import proxy_app


@pytest.mark.parametrize("client", ["aiohttp", "keepalive"])
async def test_a_bare_proxy_forwards_the_body_and_passes_the_answer_back(client):
    async def replica(reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(x.split(b":")[1]) for x in head.split(b"\r\n") if x.lower().startswith(b"content-length")
        )
        body = await reader.readexactly(length)
        reply = b'{"got": ' + body + b"}"
        writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: %d\r\n\r\n%s" % (len(reply), reply))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(replica, "127.0.0.1", 0)
    upstream = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        transport = httpx.ASGITransport(app=proxy_app(client, upstream))
        async with httpx.AsyncClient(transport=transport, base_url="http://proxy") as http:
            response = await http.post("/v1/embeddings", content=b"[1, 2]")
    finally:
        server.close()
    assert response.status_code == 201 and response.json() == {"got": [1, 2]}
