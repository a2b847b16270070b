"""What the end-to-end tests of third-party servers (`command` runtimes) share: apply a service, wait
for its replicas, scale it, and keep a client busy while it scales."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

SERVICES = "/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices"
# infinity-emb's own virtual environment (`make infinity`); its bin/ goes last on kgpu up's PATH.
INFINITY_BIN = Path(__file__).resolve().parents[2] / ".venv-infinity" / "bin"


def apply(platform, document: dict) -> None:
    name = document["metadata"]["name"]
    response = platform.http.put(f"{SERVICES}/{name}", json=document)
    assert response.status_code in (200, 201), response.text


def replicas(platform, name: str) -> list[dict]:
    return platform.replicas(service=f"default/{name}")


def wait_ready(platform, name: str, ready: int, timeout: float = 240.0, restarts: int = 0) -> list[dict]:
    """Wait until `name` has exactly `ready` replicas, all ready, restarted at least `restarts` times."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = replicas(platform, name)
        if (
            sum(r["phase"] == "Ready" for r in current) == ready
            and len(current) == ready
            and sum(r["restarts"] for r in current) >= restarts
        ):
            return current
        time.sleep(0.3)
    log = (platform.workdir / "kgpu-up.log").read_text()[-3000:]
    raise AssertionError(f"{name} not at {ready} ready replicas: {replicas(platform, name)}\n{log}")


def scale(platform, name: str, count: int) -> None:
    response = platform.http.patch(
        f"{SERVICES}/{name}",
        json={"spec": {"replicas": count}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert response.status_code == 200, response.text


@contextmanager
def load(call: Callable[[], str], workers: int = 2):
    """Call `call` in a loop from `workers` threads until the block ends; yields the list of results
    ("ok", or what went wrong), appended as they come."""
    results: list[str] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                results.append(call())
            except Exception as exc:  # every failure is a result the test asserts on
                results.append(f"error: {exc!r}")

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for thread in threads:
        thread.start()
    try:
        yield results
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)


def scale_to_two_and_back(platform, name: str, call: Callable[[], str]) -> list[str]:
    """Scale `name` from 1 to 2 replicas and back while `call` runs in a loop; return every result."""
    with load(call) as results:
        scale(platform, name, 2)
        wait_ready(platform, name, 2)
        served_by_two = len(results)
        time.sleep(1.0)
        scale(platform, name, 1)
        wait_ready(platform, name, 1)
        time.sleep(1.0)
    assert len(results) > served_by_two > 0, (len(results), served_by_two)
    return results
