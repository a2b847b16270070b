"""The forward runs in the request's own task; a client that goes cancels it, and nothing else is swallowed."""

from __future__ import annotations

import asyncio

import pytest

from kgpu.gateway.disconnect import WATCH_AFTER_S, unless_disconnected
from kgpu.http_limits import DISCONNECT_HOOKS, DisconnectHooks


class Connection:
    """What `unless_disconnected` reads of a Starlette request on a server without disconnect hooks: its
    `receive`, answering a disconnect once `leave()` is called."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.scope: dict = {}

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> dict:
        await self.gone.wait()
        return {"type": "http.disconnect"}


class HookedConnection(Connection):
    """The same on kgpu's own servers: the connection's disconnect hooks fire (kgpu.http_limits)."""

    def __init__(self) -> None:
        super().__init__()
        self.hooks = DisconnectHooks()
        self.scope = {"extensions": {DISCONNECT_HOOKS: self.hooks}}

    def leave(self) -> None:
        self.hooks.fire()

    async def receive(self) -> dict:
        raise AssertionError("with hooks, nothing watches the connection")


CONNECTIONS = pytest.mark.parametrize("make_connection", [Connection, HookedConnection])


@CONNECTIONS
def test_the_answer_comes_back_while_the_client_stays(make_connection):
    async def scenario():
        return await unless_disconnected(make_connection(), asyncio.sleep(WATCH_AFTER_S * 2, result="answer"))

    assert asyncio.run(scenario()) == "answer"


@CONNECTIONS
def test_a_client_that_leaves_cancels_the_forward_and_gets_none(make_connection):
    cancelled = []

    async def forward() -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append(True)  # the forward's own cleanup runs (leaving the hold queue)
            raise
        return "too late"

    async def scenario():
        connection = make_connection()
        asyncio.get_running_loop().call_later(WATCH_AFTER_S * 2, connection.leave)
        result = await unless_disconnected(connection, forward())
        await asyncio.sleep(0)  # the request's task goes on normally: its cancellation was handled
        return result

    assert asyncio.run(scenario()) is None
    assert cancelled == [True]


@CONNECTIONS
def test_a_cancellation_from_elsewhere_is_passed_on(make_connection):
    async def scenario():
        task = asyncio.ensure_future(unless_disconnected(make_connection(), asyncio.sleep(10)))
        await asyncio.sleep(0.01)
        task.cancel()  # the server stopping, say
        await task

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())


def test_a_client_gone_before_the_forward_starts_never_starts_it():
    started = []

    async def forward() -> str:
        started.append(True)
        return "answer"

    async def scenario():
        connection = HookedConnection()
        connection.leave()
        return await unless_disconnected(connection, forward())

    assert asyncio.run(scenario()) is None and started == []
