"""Streamed answers through the router and the real aiohttp upstream, against replica doubles on real sockets that
send server-sent events chunk by chunk (the real replicas stream in tests/e2e/test_generation_platform.py):
bytes pass on unbuffered, a replica is replaced only before the first byte, and routing weighs outstanding work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import ReplicaRegistry
from kgpu.gateway.router import ProxyResult, Router, RouterSettings

SERVICE = "default/chat"
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"

Replica = Callable[[asyncio.StreamWriter], Awaitable[None]]


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def event(text: str) -> bytes:
    return chunk(b'data: {"text": "' + text.encode() + b'"}\n\n')


async def start_replica(behaviour: Replica) -> tuple[asyncio.AbstractServer, str]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        try:
            await behaviour(writer)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


def make_router() -> tuple[Router, ReplicaRegistry]:
    registry = ReplicaRegistry()
    return Router(registry, GatewayMetrics(), RouterSettings(hold_timeout_s=1.0)), registry


async def read_all(result: ProxyResult) -> bytes:
    assert result.stream is not None
    return result.body + b"".join([part async for part in result.stream])


async def healthy(writer: asyncio.StreamWriter) -> None:
    writer.write(HEAD + event("a") + event("b") + chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()


async def test_a_replica_that_fails_before_the_first_byte_is_replaced() -> None:
    async def dies_before_first_byte(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD)  # headers, then the connection drops
        await writer.drain()

    router, registry = make_router()
    dead, dead_url = await start_replica(dies_before_first_byte)
    live, live_url = await start_replica(healthy)
    registry.add(SERVICE, "chat-0", dead_url)  # first in line: picked first
    registry.add(SERVICE, "chat-1", live_url)
    try:
        result = await router.forward(SERVICE, "/v1/completions", b"{}", "application/json", stream=True)
        assert result.replica == "chat-1"
        assert (await read_all(result)).endswith(b"data: [DONE]\n\n")
        assert router.metrics.retries.labels(service=SERVICE, reason="replica_gone")._value.get() == 1
    finally:
        await router.close()
        dead.close()
        live.close()


async def test_a_replica_that_fails_mid_stream_ends_it_with_an_error_event() -> None:
    async def dies_mid_stream(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + event("a"))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    router, registry = make_router()
    server, url = await start_replica(dies_mid_stream)
    other, other_url = await start_replica(healthy)
    registry.add(SERVICE, "chat-0", url)
    try:
        result = await router.forward(SERVICE, "/v1/completions", b"{}", "application/json", stream=True)
        registry.add(SERVICE, "chat-1", other_url)
        body = await read_all(result)
        assert b'"text": "a"' in body
        assert b'"error"' in body and b"chat-0" in body and b"[DONE]" not in body
        assert registry.get(SERVICE, "chat-1").served == 0  # never retried once bytes went out
        assert registry.get(SERVICE, "chat-0").outstanding == 0 and registry.get(SERVICE, "chat-0").work == 0
    finally:
        await router.close()
        server.close()
        other.close()


async def test_events_pass_on_before_the_replica_finishes_the_answer() -> None:
    read_first = asyncio.Event()

    async def waits_for_the_client(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + event("first"))
        await writer.drain()
        await asyncio.wait_for(read_first.wait(), 5)  # only a client that already got "first" gets further
        writer.write(event("second") + b"0\r\n\r\n")
        await writer.drain()

    router, registry = make_router()
    server, url = await start_replica(waits_for_the_client)
    registry.add(SERVICE, "chat-0", url)
    try:
        result = await router.forward(SERVICE, "/v1/completions", b"{}", "application/json", stream=True)
        assert b"first" in result.body
        read_first.set()
        assert b"second" in await read_all(result)
    finally:
        await router.close()
        server.close()


async def test_routing_weighs_outstanding_work_and_work_shrinks_as_tokens_stream() -> None:
    release = asyncio.Event()

    async def slow(writer: asyncio.StreamWriter) -> None:
        writer.write(HEAD + event("a"))
        await writer.drain()
        await release.wait()
        writer.write(event("b") + b"0\r\n\r\n")
        await writer.drain()

    router, registry = make_router()
    servers = [await start_replica(slow) for _ in range(2)]
    for index, (_, url) in enumerate(servers):
        registry.add(SERVICE, f"chat-{index}", url)
    try:

        async def send(prompt_tokens: int, max_tokens: int) -> ProxyResult:
            return await router.forward(
                SERVICE, "/v1/completions", b"{}", "application/json",
                stream=True, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
            )  # fmt: skip

        long = await send(1000, 1000)
        short = await send(10, 10)
        assert short.replica != long.replica
        # One request in flight on each replica, but far less work on the short one's: it gets the next.
        third = await send(10, 10)
        assert third.replica == short.replica
        heavy = registry.get(SERVICE, long.replica)
        assert heavy.work == 2000 - 1  # its first event (one token) already went to the client
        release.set()
        for result in (long, short, third):
            await read_all(result)
        assert all(e.work == 0 and e.outstanding == 0 for e in registry.endpoints(SERVICE))
    finally:
        await router.close()
        for server, _ in servers:
            server.close()


async def test_a_streaming_request_waits_for_a_replica_while_the_service_scales_from_zero() -> None:
    router, registry = make_router()
    woken: list[str] = []
    router.on_hold = woken.append
    server, url = await start_replica(healthy)
    try:
        pending = asyncio.create_task(
            router.forward(SERVICE, "/v1/completions", b"{}", "application/json", stream=True)
        )
        await asyncio.sleep(0.2)
        assert not pending.done() and woken == [SERVICE] and router.held(SERVICE) == 1
        registry.add(SERVICE, "chat-0", url)  # the first replica is ready
        result = await asyncio.wait_for(pending, 5)
        assert (await read_all(result)).endswith(b"data: [DONE]\n\n")
    finally:
        await router.close()
        server.close()
