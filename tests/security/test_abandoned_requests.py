"""The gateway lets go of requests whose clients have gone, and says at once when nothing will serve.

Probe: 2,100 requests with a 5 s client timeout to a service without a ready replica left 2,048
held with no connection open, and every new request got an instant 503 for 120 s.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI

from kgpu.gateway.app import gateway_routes
from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import ReplicaRegistry
from kgpu.gateway.router import Router, RouterSettings
from kgpu.http_limits import uvicorn_limits
from tests.live_server import serving

SERVICE = "default/minilm"
ABANDONED = 300  # bounded for a test; bench/security.py sends 2,100


def gateway(settings: RouterSettings) -> tuple[FastAPI, Router]:
    router = Router(ReplicaRegistry(), GatewayMetrics(), settings)
    app = FastAPI()
    app.include_router(
        gateway_routes(router, lambda m: SERVICE if m == "minilm" else None, lambda: ["minilm"])
    )
    return app, router


async def _abandon(url: str, count: int, client_timeout_s: float) -> list[str]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=url, timeout=client_timeout_s, limits=limits) as client:

        async def one() -> str:
            try:
                response = await client.post("/v1/embeddings", json={"model": "minilm", "input": "x"})
            except httpx.TimeoutException:
                return "gave up"
            return str(response.status_code)

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.mark.parametrize("server", ["uvicorn", "kgpu"])  # kgpu's: the connection's disconnect hooks
def test_requests_whose_clients_gave_up_leave_the_hold_queue_at_once(server):
    app, router = gateway(RouterSettings(hold_timeout_s=60.0, max_held_per_service=2048))
    with serving(app, **(uvicorn_limits() if server == "kgpu" else {})) as url:
        outcomes = asyncio.run(_abandon(url, ABANDONED, client_timeout_s=1.0))
        assert outcomes.count("gave up") == ABANDONED
        deadline = time.monotonic() + 1.0
        while router.held(SERVICE) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert router.held(SERVICE) == 0
        # A new request is held (not refused as if the queue were full): it times out waiting.
        assert asyncio.run(_abandon(url, 1, client_timeout_s=0.3)) == ["gave up"]


def test_a_service_scaled_to_zero_without_autoscaling_answers_503_at_once():
    app, router = gateway(RouterSettings(hold_timeout_s=60.0))
    router.set_parked(SERVICE, True)
    with serving(app) as url:
        started = time.monotonic()
        response = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm", "input": "x"}, timeout=10)
        assert time.monotonic() - started < 5.0  # not held for the 60 s hold timeout
    assert response.status_code == 503
    assert "replicas: 0 and no autoscaling" in response.json()["error"]["message"]
    assert router.held(SERVICE) == 0
