"""The gateway's keep-alive client for whole answers, against real sockets on loopback.

Each test's server is a plain asyncio server that answers as HTTP/1.1 servers do (uvicorn, infinity,
vLLM): keep-alive by default, `connection: close` or HTTP/1.0 to end, chunked or sized bodies, idle
connections closed on the server's own schedule.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from kgpu.gateway.keepalive_client import ConnectionFailed, KeepAliveClient, split_http_url


class Server:
    """Counts connections and requests; `answer(request_number, body)` gives the raw answer bytes (None:
    drop the connection without a byte)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.heads: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
                self.heads.append(head)
                self.requests.append(body)
                reply = self.answer(len(self.requests), body)
                if reply is None:
                    writer.transport.abort()
                    return
                writer.write(reply)
                await writer.drain()
                if b"connection: close" in reply.lower() or reply.startswith(b"HTTP/1.0"):
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            return


@contextlib.asynccontextmanager
async def client_of(answer, **settings):
    """A `Server` answering with `answer` and a client (with `settings`) of it: (server, base URL, client)."""
    server = Server(answer)
    async with server as base:
        client = KeepAliveClient(**settings)
        try:
            yield server, base, client
        finally:
            client.close()


def sized(body: bytes, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
        + extra
        + b"\r\n"
        + body
    )


def echo(number: int, body: bytes) -> bytes:
    return sized(b'{"n": %d, "echo": %s}' % (number, body))


async def test_requests_reuse_one_connection_and_answers_pass_through():
    async with client_of(echo) as (server, base, client):
        first = await client.post(base + "/v1/embeddings", b"[1]", {"content-type": "application/json"})
        second = await client.post(base + "/v1/embeddings", b"[2]", {"content-type": "application/json"})
    assert first == (200, {"content-type": "application/json"}, b'{"n": 1, "echo": [1]}')
    assert second[2] == b'{"n": 2, "echo": [2]}'
    assert server.connections == 1
    head = server.heads[0].decode()
    assert head.startswith("POST /v1/embeddings HTTP/1.1\r\n")
    assert f"host: {base.removeprefix('http://')}\r\n" in head and "content-length: 3\r\n" in head


async def test_only_the_answer_headers_asked_for_are_passed_on():
    async with client_of(
        lambda n, body: sized(b"{}", "429 Too Many Requests", b"retry-after: 3\r\nx-internal: no\r\n"),
        pass_headers=["Content-Type", "retry-after"],
    ) as (_server, base, client):
        status, headers, _ = await client.post(base + "/x", b"{}", {})
    assert status == 429
    assert headers == {"content-type": "application/json", "retry-after": "3"}


async def bodies_and_connections(answer, requests: int) -> tuple[list[bytes], int]:
    """The bodies of `requests` POSTs in a row to a server answering with `answer`, and how many
    connections they took."""
    async with client_of(answer) as (server, base, client):
        answers = [await client.post(base + "/x", b"{}", {}) for _ in range(requests)]
    return [body for _, _, body in answers], server.connections


async def test_a_chunked_answer_is_read_whole():
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert await bodies_and_connections(lambda n, body: chunked, 2) == ([b"hello world"] * 2, 1)


async def test_an_answer_ended_by_closing_the_connection_is_read_whole_and_not_reused():
    until_close = b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end"
    assert await bodies_and_connections(lambda n, body: until_close, 2) == ([b"until the end"] * 2, 2)


async def test_connection_close_from_the_server_means_a_new_connection_next_time():
    closing = sized(b"{}", extra=b"connection: close\r\n")
    assert await bodies_and_connections(lambda n, body: closing, 3) == ([b"{}"] * 3, 3)


async def test_a_pooled_connection_the_server_closed_is_replaced_without_an_error():
    async with client_of(echo) as (server, base, client):
        await client.post(base + "/x", b"[1]", {})
        for writer in server.writers:  # the server's idle timeout closes the kept connection
            writer.close()
        await asyncio.sleep(0.05)
        status, _, body = await client.post(base + "/x", b"[2]", {})
    assert status == 200 and body == b'{"n": 2, "echo": [2]}'
    assert server.connections == 2


async def test_a_pooled_connection_dropped_as_the_request_went_out_is_tried_once_more_on_a_new_one():
    # The server drops the 2nd request unanswered.
    async with client_of(lambda n, body: None if n == 2 else echo(n, body)) as (server, base, client):
        await client.post(base + "/x", b"[1]", {})
        status, _, body = await client.post(base + "/x", b"[2]", {})
    assert status == 200 and body == b'{"n": 3, "echo": [2]}'
    assert server.connections == 2


async def test_connections_the_server_closed_leave_the_pool_with_their_origin():
    """Replicas come and go on new ports: nothing of a closed connection or a gone origin stays."""
    async with client_of(echo) as (server, base, client):
        await client.post(base + "/x", b"[1]", {})
        assert len(client._idle) == 1
        for writer in server.writers:
            writer.close()
        await asyncio.sleep(0.05)
        assert client._idle == {}


async def test_a_connection_idle_too_long_is_not_reused():
    async with client_of(echo, idle_s=0.05) as (server, base, client):
        await client.post(base + "/x", b"[1]", {})
        await asyncio.sleep(0.1)
        await client.post(base + "/x", b"[2]", {})
    assert server.connections == 2


async def test_a_replica_that_dies_after_reading_the_request_fails_it():
    async with client_of(lambda n, body: None) as (server, base, client):
        with pytest.raises(ConnectionFailed, match="closed the connection"):
            await client.post(base + "/x", b"{}", {})
    assert server.connections == 1  # a fresh connection that failed is not tried again here


async def test_no_whole_answer_in_time_fails_and_the_connection_is_not_reused():
    async with client_of(
        lambda n, body: b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf" if n == 1 else echo(n, body),
        timeout_s=0.2,
    ) as (server, base, client):
        with pytest.raises(ConnectionFailed, match="within 0.2 s"):
            await client.post(base + "/x", b"[1]", {})
        assert (await client.post(base + "/x", b"[2]", {}))[0] == 200
    assert server.connections == 2


async def test_a_pooled_connection_that_times_out_is_not_tried_again():
    # The request may be running on the replica: a second try would run it twice, after a whole
    # timeout already spent. (The server answers the 2nd request with nothing, and keeps the connection.)
    async with client_of(lambda n, body: b"" if n == 2 else echo(n, body), timeout_s=0.2) as (
        server,
        base,
        client,
    ):
        await client.post(base + "/x", b"[1]", {})
        with pytest.raises(ConnectionFailed, match="within 0.2 s"):
            await client.post(base + "/x", b"[2]", {})
    assert (server.connections, len(server.requests)) == (1, 2)


async def test_a_request_cancelled_mid_answer_leaves_its_connection_unused():
    async def slow_then_fast(reader, writer):
        nonlocal connections
        connections += 1
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        if connections == 1:
            await asyncio.sleep(10)  # never answers in time: the client gives up
        writer.write(sized(b'"fresh"'))
        await writer.drain()

    connections = 0
    server = await asyncio.start_server(slow_then_fast, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = KeepAliveClient()
    try:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.post(base + "/x", b"{}", {}), 0.1)
        assert (await client.post(base + "/x", b"{}", {}))[2] == b'"fresh"'
    finally:
        client.close()
        server.close()
    assert connections == 2


async def test_garbage_from_the_server_fails_the_request():
    async with client_of(lambda n, body: b"SSH-2.0-OpenSSH_9.6\r\n\r\n") as (_server, base, client):
        with pytest.raises(ConnectionFailed, match="not HTTP"):
            await client.post(base + "/x", b"{}", {})


async def test_a_header_with_a_line_break_is_refused_before_anything_is_sent():
    async with client_of(echo) as (server, base, client):
        with pytest.raises(ValueError, match="line break"):
            await client.post(base + "/x", b"{}", {"x-a": "1\r\nx-injected: yes"})
    assert server.requests == []


def test_urls_split_into_host_port_authority_and_path():
    assert split_http_url("http://127.0.0.1:8001/v1/embeddings") == (
        "127.0.0.1",
        8001,
        "127.0.0.1:8001",
        "/v1/embeddings",
    )
    assert split_http_url("http://[::1]:9000/v2/models/m/infer") == (
        "::1",
        9000,
        "[::1]:9000",
        "/v2/models/m/infer",
    )
    assert split_http_url("http://replica.ns.svc") == ("replica.ns.svc", 80, "replica.ns.svc", "/")
    assert split_http_url("http://h:1/v2/models/é/infer")[3] == "/v2/models/%C3%A9/infer"
    with pytest.raises(ValueError):
        split_http_url("https://h:1/x")


async def test_a_connection_closed_before_the_request_goes_out_fails_it_as_a_lost_connection():
    async with client_of(echo) as (_server, base, client):
        connection = await client._connect("127.0.0.1", int(base.rsplit(":", 1)[1]))
        connection.transport.close()  # the replica went between the connect and the write
        with pytest.raises(ConnectionFailed, match="closed"):
            await connection.exchange(b"POST /x HTTP/1.1\r\ncontent-length: 0\r\n\r\n", 1.0)


async def test_a_large_body_goes_out_whole():
    async with client_of(lambda n, body: sized(str(len(body)).encode())) as (server, base, client):
        body = b"x" * (3 * 1024 * 1024 + 7)  # above the size sent as two buffers
        assert (await client.post(base + "/x", body, {}))[2] == str(len(body)).encode()
    assert server.requests == [body]


async def test_an_answer_larger_than_the_limit_fails_its_request():
    async with client_of(lambda n, body: sized(b"x" * 5000), max_answer_bytes=4096) as (
        _server,
        base,
        client,
    ):
        with pytest.raises(ConnectionFailed, match="larger than 4096 bytes"):
            await client.post(base + "/x", b"{}", {})


async def test_a_second_answer_to_one_request_leaves_the_first_intact_and_the_connection_unused():
    def two_answers(number: int, body: bytes) -> bytes:
        if number == 1:
            return (
                sized(b'"first"') + b'HTTP/1.1 500 Internal Server Error\r\ncontent-length: 7\r\n\r\n"extra"'
            )
        return sized(b'"next"')

    async with client_of(two_answers) as (server, base, client):
        first = await client.post(base + "/x", b"{}", {})
        second = await client.post(base + "/x", b"{}", {})
    assert first[0] == 200 and first[2] == b'"first"'
    assert second[2] == b'"next"' and server.connections == 2
