"""A real uvicorn server for an ASGI app, in a thread, for tests that need a URL (CLI, OpenAI client)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from kgpu.backends.local_replica import free_port


@contextmanager
def serving(app, **config) -> Iterator[str]:
    """Serve `app` on a free loopback port; yields its base URL and stops the server on exit.

    `config`: more `uvicorn.Config` settings (the limits of kgpu.http_limits, for instance)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
