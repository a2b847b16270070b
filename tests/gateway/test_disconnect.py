"""The forward runs in the request's own task; a client that goes cancels it, and nothing else is swallowed."""

from __future__ import annotations

import asyncio

import pytest

from kgpu.gateway.disconnect import unless_disconnected


class Connection:
    """What `unless_disconnected` reads of a Starlette request: its `receive`, answering a disconnect once
    `leave()` is called."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


def test_the_answer_comes_back_while_the_client_stays():
    async def scenario():
        return await unless_disconnected(Connection(), asyncio.sleep(0.01, result="answer"))

    assert asyncio.run(scenario()) == "answer"


def test_a_client_that_leaves_cancels_the_forward_and_gets_none():
    cancelled = []

    async def forward() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)  # the forward's own cleanup runs (leaving the hold queue)
            raise
        return "too late"

    async def scenario():
        connection = Connection()
        asyncio.get_running_loop().call_later(0.01, connection.leave)
        result = await unless_disconnected(connection, forward())
        await asyncio.sleep(0)  # the request's task goes on normally: its cancellation was handled
        return result

    assert asyncio.run(scenario()) is None
    assert cancelled == [True]


def test_a_cancellation_from_elsewhere_is_passed_on():
    async def scenario():
        task = asyncio.ensure_future(unless_disconnected(Connection(), asyncio.sleep(10)))
        await asyncio.sleep(0.01)
        task.cancel()  # the server stopping, say
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())
