"""kgpu's servers send an answer's headers and body at once, and never hold a write past its event-loop turn."""

from __future__ import annotations

import asyncio
import threading

import httpx
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from kgpu.http_limits import uvicorn_limits
from kgpu.write_coalescing import CoalescingTransport
from tests.live_server import serving


class RecordingTransport:
    """What a real transport was asked to do, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def writelines(self, chunks) -> None:
        self.calls.append(("writelines", list(chunks)))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.calls.append(("close",))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort",))
        self.closing = True

    def get_extra_info(self, name: str):
        return ("127.0.0.1", 1) if name == "peername" else None


def test_two_writes_of_one_turn_leave_together_at_once_and_a_lone_write_at_the_turns_end():
    async def scenario() -> list[tuple]:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        assert real.calls == [] and transport.get_write_buffer_size() == 38  # held for the body
        transport.write(b"ok")
        assert real.calls == [("writelines", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok"])]
        transport.write(b"next")
        assert len(real.calls) == 1  # held until the turn ends or another write comes
        await asyncio.sleep(0)
        return real.calls

    calls = asyncio.run(scenario())
    assert calls == [
        ("writelines", [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n", b"ok"]),
        ("writelines", [b"next"]),
    ]


def test_close_sends_what_was_written_first_and_abort_drops_it():
    async def scenario() -> tuple[list[tuple], list[tuple]]:
        loop = asyncio.get_running_loop()
        closed, aborted = RecordingTransport(), RecordingTransport()
        first, second = CoalescingTransport(closed, loop), CoalescingTransport(aborted, loop)
        first.write(b"last words")
        first.close()
        second.write(b"never sent")
        second.abort()
        await asyncio.sleep(0)  # the flushes scheduled by the writes find nothing left
        return closed.calls, aborted.calls

    closed, aborted = asyncio.run(scenario())
    assert closed == [("writelines", [b"last words"]), ("close",)]
    assert aborted == [("abort",)]


def test_a_streamed_answers_chunks_leave_as_they_are_written_through_a_kgpu_server():
    """A chunk is not held for the next one: the client reads the first before the second exists."""
    first_read = threading.Event()
    app = FastAPI()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def chunks():
            yield b"data: one\n\n"
            while not first_read.is_set():  # the second chunk waits for the client to have the first
                await asyncio.sleep(0.01)
            yield b"data: two\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    with (
        serving(app, **uvicorn_limits()) as base,
        httpx.stream("GET", f"{base}/stream", timeout=5) as response,
    ):
        received = []
        for chunk in response.iter_raw():
            received.append(chunk)
            first_read.set()
    assert b"".join(received) == b"data: one\n\ndata: two\n\n"
    assert received[0] == b"data: one\n\n"
