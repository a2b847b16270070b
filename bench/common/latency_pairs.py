"""Paired concurrency-1 latencies: one client sends each body to every target in turn.

The order rotates and a short pause follows every request, so every target sees the same moments of a
shared machine (see bench/latency_c1.py for why unpaired windows drift apart).
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import numpy as np


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


def added_p50(base: list[float], other: list[float], resamples: int = 2000, seed: int = 0) -> dict:
    """How much higher `other`'s p50 is than `base`'s, with a 95 % bootstrap interval and the median of
    the paired differences.

    The two p50s each move by tenths of a millisecond between runs on a shared machine; resampling the
    pairs (request i of both targets together, so a moment of load weighs on both) says how far the
    difference itself can be trusted."""
    a, b = np.asarray(base), np.asarray(other)
    if len(a) != len(b) or not len(a):
        raise ValueError("needs the same number (> 0) of latencies for both targets")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(a), size=(resamples, len(a)))
    differences = np.median(b[picks], axis=1) - np.median(a[picks], axis=1)
    low, high = np.percentile(differences, [2.5, 97.5])
    return {
        "p50_added_ms": round(float(np.median(b) - np.median(a)), 3),
        "ci95_ms": [round(float(low), 3), round(float(high), 3)],
        "median_paired_difference_ms": round(float(np.median(b - a)), 3),
    }
