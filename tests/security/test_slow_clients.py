"""A client too slow to send its request loses its connection (slowloris).

Probe: a connection sending its headers a byte at a time stayed open 45 s (uvicorn has no
deadline for reading a request). kgpu's servers run with kgpu.http_limits' deadlines; here they
are shortened so the test stays quick.
"""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from fastapi import FastAPI, Request

from kgpu.http_limits import DeadlineHttpToolsProtocol, uvicorn_limits
from tests.live_server import serving

DEADLINE_S = 0.5


class QuickDeadlines(DeadlineHttpToolsProtocol):
    header_timeout_s = DEADLINE_S
    body_idle_timeout_s = DEADLINE_S


def app() -> FastAPI:
    api = FastAPI()

    @api.post("/echo")
    async def echo(request: Request) -> dict:
        return {"bytes": len(await request.body())}

    return api


@pytest.fixture
def url():
    with serving(app(), **{**uvicorn_limits(), "http": QuickDeadlines}) as base:
        yield base


def _open(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=5)
    return sock


def _closed_within(sock: socket.socket, seconds: float, trickle: bytes = b"") -> bool:
    """Whether the server closes the connection within `seconds`, while `trickle` is sent a byte at a time."""
    deadline = time.monotonic() + seconds
    sock.settimeout(0.1)
    sent = 0
    while time.monotonic() < deadline:
        if sent < len(trickle):
            try:
                sock.send(trickle[sent : sent + 1])
            except OSError:
                return True
            sent += 1
        try:
            if sock.recv(4096) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


def test_headers_sent_a_byte_at_a_time_lose_the_connection(url):
    sock = _open(url)
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100
    with sock:
        assert _closed_within(sock, 4 * DEADLINE_S, trickle=head)


def test_a_body_that_stops_coming_loses_the_connection(url):
    sock = _open(url)
    with sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
        )
        assert _closed_within(sock, 4 * DEADLINE_S)


def test_an_idle_connection_before_its_first_request_is_closed(url):
    with _open(url) as sock:
        assert _closed_within(sock, 4 * DEADLINE_S)


def test_a_request_sent_in_time_is_served_on_a_kept_alive_connection(url):
    with httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.post("/echo", content=b"{}" * 100).json() == {"bytes": 200}
            time.sleep(DEADLINE_S * 1.5)  # idle between requests: the keep-alive limit, not the deadline
