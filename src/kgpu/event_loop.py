"""Run a long-lived server coroutine on uvloop when it is installed, as `uvicorn.run` itself would.

`kgpu up` and the replica start uvicorn from their own `asyncio.run` (they run other tasks beside the
server), which bypasses uvicorn's loop choice and leaves them on the pure-Python asyncio loop; every
request then pays that loop's overhead twice (gateway and replica) on the hot path.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it on Linux and macOS; elsewhere asyncio serves
        uvloop = None
    if uvloop is None or not hasattr(asyncio, "Runner"):  # asyncio.Runner: Python 3.11 and later
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def after_uvicorn_stops(log: logging.Logger) -> None:
    """Let SIGINT/SIGTERM end the process quietly once uvicorn has shut down.

    uvicorn handles the stop signal itself (drains, stops the app) and then raises it again so that the
    previous handler runs. With Python's default handlers that second signal becomes a
    KeyboardInterrupt in the middle of the clean exit (a traceback on Ctrl-C) or kills the process "by
    SIGTERM"; this handler only logs it. Set before the server starts: uvicorn captures the signals
    while it serves, so a stop during start-up still stops it.
    """

    def handled(sig: int, frame: object) -> None:
        log.info("stop signal %d handled; exiting", sig)

    for stop_signal in (signal.SIGTERM, signal.SIGINT):
        signal.signal(stop_signal, handled)
