"""A keep-alive HTTP/1.1 client for the gateway's whole answers: asyncio protocols and httptools' parser.

Why not aiohttp's client here: at concurrency 1 the gateway's own CPU is most of what it adds to a
request, and aiohttp's request path (a request and a response object, timer handles, a payload
registry, a writer, cookie and trace hooks) was the largest part of it: a bare proxy on uvicorn adds
about half the latency with this client that it adds with aiohttp's (`python -m bench.proxy_floor`;
bench/results/2026-12-05-gateway-hot-path.md).
The parser is httptools (the one uvicorn uses); only connection reuse and the request's framing are
written here. Streams and reads stay on aiohttp (kgpu.gateway.upstream).

One request per connection at a time, connections reused last-in-first-out per origin. A connection
idle longer than `idle_s` is not reused: servers close idle keep-alive connections on their own
schedule (uvicorn after 5 s), and a request written into one they are closing would be lost. A
connection on which an answer was not read to its end is never reused.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from urllib.parse import quote

import httptools

LARGE_BODY = 64 * 1024  # above this a request's head and body go out as two buffers, not one copy
# An answer larger than this fails its request: a command runtime is the tenant's own process, and the
# gateway, shared by every project, holds a whole answer in memory before passing it on.
MAX_ANSWER_BYTES = 256 * 1024 * 1024


class ConnectionFailed(Exception):
    """The server could not be reached, dropped the connection, answered garbage or took too long."""


class _Answer:
    __slots__ = ("chunks", "headers", "headers_done", "length_known", "size", "status")

    def __init__(self) -> None:
        self.status = 0
        self.size = 0
        self.headers: dict[str, str] = {}
        self.chunks: list[bytes] = []
        self.length_known = False  # content-length or chunked: the end is in the data, not the close
        self.headers_done = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; `exchange` sends a request and waits for its whole answer."""

    def __init__(
        self,
        pass_headers: frozenset[bytes],
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        on_lost: Callable[[_Connection], None] | None = None,
    ) -> None:
        self.pass_headers = pass_headers
        self.on_lost = on_lost  # told when the connection closes, so a pool lets go of it
        self.max_answer_bytes = max_answer_bytes
        self.refusal: str | None = None  # why parsing was stopped from a callback
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.answer = _Answer()
        self.waiter: asyncio.Future[_Answer] | None = None
        self.closed = False
        self.received = False  # a byte of the current answer came
        self.timed_out = False
        self.reusable = False
        self.idle_since = 0.0
        self.origin: tuple[str, int] = ("", 0)

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if self.waiter is None or self.waiter.done():
            self._abort()  # bytes nobody asked for: the connection is out of step
            return
        self.received = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionFailed(self.refusal or f"the server's answer is not HTTP/1.1: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.on_lost is not None:
            self.on_lost(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        answer = self.answer
        if answer.headers_done and not answer.length_known:
            waiter.set_result(answer)  # an answer delimited by the close of the connection
        else:
            waiter.set_exception(ConnectionFailed(f"the server closed the connection ({exc or 'EOF'})"))

    # httptools callbacks (an exception raised in one stops the parser: data_received fails the request)
    def _stop(self, refusal: str) -> None:
        self.refusal = refusal
        raise ConnectionFailed(refusal)

    def on_message_begin(self) -> None:
        if self.waiter is None or self.waiter.done():
            # A second answer to one request (in the same read as the first): out of step, never reused.
            self._stop("the server sent an answer nobody asked for")

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in self.pass_headers:
            self.answer.headers[name.decode()] = value.decode("latin-1")
        if name == b"content-length" or (name == b"transfer-encoding" and b"chunked" in value.lower()):
            self.answer.length_known = True

    def on_headers_complete(self) -> None:
        self.answer.status = self.parser.get_status_code()
        self.answer.headers_done = True

    def on_body(self, body: bytes) -> None:
        answer = self.answer
        answer.size += len(body)
        if answer.size > self.max_answer_bytes:
            self._stop(f"the server's answer is larger than {self.max_answer_bytes} bytes")
        answer.chunks.append(body)

    def on_message_complete(self) -> None:
        answer = self.answer
        if answer.status < 200:  # an interim answer (100 Continue): the real one follows
            self.answer = _Answer()
            return
        answer.length_known = True
        self.reusable = self.parser.should_keep_alive()
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(answer)

    def _fail(self, exc: Exception) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc)
        self._abort()

    def _time_out(self, timeout_s: float) -> None:
        self.timed_out = True
        self._fail(ConnectionFailed(f"no whole answer within {timeout_s} s"))

    def _abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def exchange(self, request: bytes | tuple[bytes, bytes], timeout_s: float) -> _Answer:
        loop = asyncio.get_running_loop()
        self.answer = _Answer()
        self.received = self.timed_out = self.reusable = False
        self.waiter = waiter = loop.create_future()
        assert self.transport is not None
        try:
            if self.closed or self.transport.is_closing():
                raise ConnectionResetError("closed before the request went out")
            if isinstance(request, tuple):
                self.transport.writelines(request)
            else:
                self.transport.write(request)
        except (OSError, RuntimeError) as exc:  # uvloop: RuntimeError on a transport already closed
            self.waiter = None
            self._abort()
            raise ConnectionFailed(f"the server closed the connection ({exc})") from exc
        timer = loop.call_later(timeout_s, self._time_out, timeout_s)
        try:
            return await waiter
        finally:
            timer.cancel()
            self.waiter = None
            if not waiter.done() or not self.reusable:
                self._abort()  # cancelled mid-answer, or the server will close it: never reused


class KeepAliveClient:
    """POSTs over pooled keep-alive connections (plain http:// only)."""

    def __init__(
        self,
        timeout_s: float = 300.0,
        connect_timeout_s: float = 5.0,
        idle_s: float = 4.0,
        max_idle: int = 256,
        max_answer_bytes: int = MAX_ANSWER_BYTES,
        pass_headers: Iterable[str] = ("content-type",),
    ) -> None:
        """`pass_headers`: the answer headers returned (any case); the rest are dropped."""
        self.pass_headers = frozenset(name.lower().encode() for name in pass_headers)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.idle_s = idle_s
        self.max_idle = max_idle  # idle connections kept per origin
        self.max_answer_bytes = max_answer_bytes
        # Idle connections per origin; a connection leaves when it closes (`_forget`), and an origin with
        # none left leaves too: replicas come and go on new ports, and nothing of the old ones stays.
        self._idle: dict[tuple[str, int], list[_Connection]] = {}

    def _forget(self, connection: _Connection) -> None:
        pool = self._idle.get(connection.origin)
        if pool is not None and connection in pool:
            pool.remove(connection)
            if not pool:
                del self._idle[connection.origin]

    def _pooled(self, key: tuple[str, int]) -> _Connection | None:
        pool = self._idle.get(key)
        if not pool:
            return None
        oldest_usable = time.monotonic() - self.idle_s
        while pool:
            connection = pool.pop()
            if not pool:
                del self._idle[key]
            if not connection.closed and connection.idle_since >= oldest_usable:
                return connection
            connection._abort()
        return None

    async def _connect(self, host: str, port: int) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, connection = await asyncio.wait_for(
                loop.create_connection(
                    lambda: _Connection(self.pass_headers, self.max_answer_bytes, self._forget), host, port
                ),
                self.connect_timeout_s,
            )
        except (OSError, asyncio.TimeoutError) as exc:
            raise ConnectionFailed(f"cannot connect to {host}:{port}: {exc or type(exc).__name__}") from exc
        connection.origin = (host, port)
        return connection

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        """(status, passed-on headers, body) of a POST to an http:// URL; ConnectionFailed when no whole
        answer came."""
        host, port, authority, path = split_http_url(url)
        request = _request_bytes(authority, path, body, headers)
        key = (host, port)
        connection = self._pooled(key)
        reused = connection is not None
        if connection is None:
            connection = await self._connect(host, port)
        try:
            answer = await connection.exchange(request, self.timeout_s)
        except ConnectionFailed:
            if not reused or connection.received or connection.timed_out:
                raise
            # The server closed a pooled connection as the request went out: once more on a new one.
            connection = await self._connect(host, port)
            answer = await connection.exchange(request, self.timeout_s)
        if connection.reusable and not connection.closed:
            pool = self._idle.setdefault(key, [])
            if len(pool) < self.max_idle:
                connection.idle_since = time.monotonic()
                pool.append(connection)
            else:
                connection._abort()
        body = answer.chunks[0] if len(answer.chunks) == 1 else b"".join(answer.chunks)
        return answer.status, answer.headers, body

    def close(self) -> None:
        for pool in self._idle.values():
            for connection in pool:
                connection._abort()
        self._idle.clear()


@lru_cache(maxsize=1024)
def _authority(authority: str) -> tuple[str, int]:
    """`127.0.0.1:8001` -> ("127.0.0.1", 8001); `[::1]:8001` -> ("::1", 8001); no port: 80."""
    host, colon, port = authority.rpartition(":")
    if not colon or host.endswith(":") or "]" in port:  # no port (an IPv6 address's colons are not one)
        host, port = authority, "80"
    if not port.isdigit():
        raise ValueError(f"not a port in {authority!r}")
    return host.strip("[]"), int(port)


def split_http_url(url: str) -> tuple[str, int, str, str]:
    """(host, port, authority, path) of an http:// URL (ValueError for any other)."""
    if not url.startswith("http://"):
        raise ValueError(f"not an http:// URL: {url!r}")
    authority, slash, path = url[7:].partition("/")
    host, port = _authority(authority)
    path = slash + path or "/"
    if not path.isascii():
        path = quote(path, safe="/:@!$&'()*+,;=-._~%?#")
    return host, port, authority, path


def _request_bytes(
    authority: str, path: str, body: bytes, headers: Mapping[str, str]
) -> bytes | tuple[bytes, bytes]:
    lines = [f"POST {path} HTTP/1.1\r\nhost: {authority}\r\ncontent-length: {len(body)}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"header {name!r} has a line break")  # would split the request in two
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n")
    head = "".join(lines).encode("latin-1")
    if len(body) > LARGE_BODY:
        return head, body
    return head + body
