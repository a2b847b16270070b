"""Paired concurrency-1 latencies: one client sends each body to every target in turn.

The order rotates and a short pause follows every request, so every target sees the same moments of a
shared machine (see bench/latency_c1.py for why unpaired windows drift apart).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp


async def paired(urls: dict[str, str], bodies: list[bytes], requests: int, warmup: int, gap_s: float) -> dict:
    """Latencies in ms per target, request i of every target carrying the same body."""
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    names = list(urls)
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        for i in range(warmup + requests):
            body = bodies[i % len(bodies)]
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                started = time.perf_counter()
                async with session.post(urls[name], data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"{name}: HTTP {response.status}")
                elapsed = (time.perf_counter() - started) * 1000
                if i >= warmup:
                    latencies[name].append(elapsed)
                await asyncio.sleep(gap_s)
    return latencies
