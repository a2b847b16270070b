"""The gateway's upstream clients against real sockets: answers pass through, dead replicas raise
ReplicaGone. Both the aiohttp client (streams, reads) and the gateway's default for whole answers
(aiohttp's, with kgpu.gateway.keepalive_client for http://) are held to the same behaviour."""

from __future__ import annotations

import asyncio
import socket

import pytest

from kgpu.gateway.upstream import AiohttpUpstream, GatewayUpstream, ReplicaGone

UPSTREAMS = pytest.mark.parametrize("make_upstream", [AiohttpUpstream, GatewayUpstream])


async def _serve(handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        (
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        ),
        0,
    )
    return await reader.readexactly(length)


@UPSTREAMS
async def test_answer_status_headers_and_body_pass_through(make_upstream):
    async def handler(reader, writer):
        body = await _read_request(reader)
        reply = b'{"echo": ' + body + b"}"
        writer.write(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\nretry-after: 3\r\n"
            b"x-internal: no\r\ncontent-length: " + str(len(reply)).encode() + b"\r\n\r\n" + reply
        )
        await writer.drain()
        writer.close()

    server, port = await _serve(handler)
    upstream = make_upstream()
    try:
        response = await upstream.post(f"http://127.0.0.1:{port}/v1/embeddings", b"[1]", "application/json")
    finally:
        await upstream.close()
        server.close()
    assert response.status == 429
    assert response.body == b'{"echo": [1]}'
    assert response.headers == {"content-type": "application/json", "retry-after": "3"}


@UPSTREAMS
async def test_connection_dropped_mid_request_is_replica_gone(make_upstream):
    async def handler(reader, writer):
        await _read_request(reader)
        writer.transport.abort()  # what a SIGKILLed replica looks like from outside

    server, port = await _serve(handler)
    upstream = make_upstream()
    try:
        with pytest.raises(ReplicaGone):
            await upstream.post(f"http://127.0.0.1:{port}/x", b"{}", "application/json")
    finally:
        await upstream.close()
        server.close()


@UPSTREAMS
async def test_refused_connection_is_replica_gone(make_upstream):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    upstream = make_upstream(connect_timeout_s=2)
    try:
        with pytest.raises(ReplicaGone):
            await upstream.post(f"http://127.0.0.1:{port}/x", b"{}", "application/json")
    finally:
        await upstream.close()
