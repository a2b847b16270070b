"""Closed-loop HTTP load generator (aiohttp: its C parser keeps the client's CPU share small): N virtual clients, each sends its next request when the last returns.

Kept deliberately light because it shares the CPU with the server under test: request bodies are
encoded once up front, connections are kept alive and reused, responses are read but not parsed, and
the whole thing is one asyncio loop per process (uvloop when installed). On machines with many cores
the clients can be spread over several processes (``processes``) so the client is never the ceiling.

Timing: all clients start together, the first ``warmup_s`` seconds are discarded, and a request counts
when it completes inside the measurement window of ``duration_s`` seconds. Throughput is completions in
the window divided by the window length; latency percentiles are over the same requests. Non-200
answers and transport failures are counted as errors and never enter throughput or latency.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

# How long clients may finish their last request after the window closes before they are cancelled.
_DRAIN_GRACE_S = 30.0
_REQUEST_TIMEOUT_S = 120.0


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    warmup_s: float
    inputs_per_request: int
    latencies_s: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: Counter = field(default_factory=Counter)
    processes: int = 1

    def merge(self, other: LoadResult) -> None:
        self.latencies_s.extend(other.latencies_s)
        self.errors += other.errors
        self.error_kinds.update(other.error_kinds)

    def summary(self) -> dict:
        ok = len(self.latencies_s)
        req_per_s = ok / self.duration_s if self.duration_s > 0 else 0.0
        ordered = sorted(self.latencies_s)
        return {
            "concurrency": self.concurrency,
            "requests_ok": ok,
            "errors": self.errors,
            "error_kinds": dict(self.error_kinds),
            "req_per_s": round(req_per_s, 2),
            "emb_per_s": round(req_per_s * self.inputs_per_request, 2),
            "p50_ms": _ms(percentile(ordered, 0.50)),
            "p90_ms": _ms(percentile(ordered, 0.90)),
            "p99_ms": _ms(percentile(ordered, 0.99)),
            "mean_ms": _ms(sum(ordered) / ok if ok else None),
            "duration_s": self.duration_s,
            "warmup_s": self.warmup_s,
            "client_processes": self.processes,
        }


def percentile(ordered: list[float], q: float) -> float | None:
    """Linear-interpolated percentile of an already sorted list (None when empty)."""
    if not ordered:
        return None
    pos = q * (len(ordered) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


async def _drive(
    url: str,
    bodies: list[bytes],
    client_ids: list[int],
    start_at: float,
    warmup_s: float,
    duration_s: float,
    result: LoadResult,
    extra_headers: dict[str, str] | None = None,
) -> None:
    window_start = start_at + warmup_s
    window_end = window_start + duration_s
    n = len(client_ids)
    headers = {"content-type": "application/json", **(extra_headers or {})}
    connector = aiohttp.TCPConnector(limit=n, limit_per_host=n)
    timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def virtual_client(cid: int) -> None:
            # Spread clients over the sentence pool so they do not send the same text in lockstep.
            k = cid * 7919
            while time.monotonic() < window_end:
                body = bodies[k % len(bodies)]
                k += 1
                t0 = time.perf_counter()
                try:
                    async with client.post(url, data=body, headers=headers) as response:
                        await response.read()
                        kind = None if response.status == 200 else f"http {response.status}"
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    kind = type(exc).__name__
                t1 = time.perf_counter()
                done = time.monotonic()
                if window_start <= done <= window_end:
                    if kind is None:
                        result.latencies_s.append(t1 - t0)
                    else:
                        result.errors += 1
                        result.error_kinds[kind] += 1

        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        tasks = [asyncio.create_task(virtual_client(cid)) for cid in client_ids]
        _, pending = await asyncio.wait(tasks, timeout=window_end - time.monotonic() + _DRAIN_GRACE_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _run_loop(coro) -> None:
    try:
        import uvloop  # optional: a cheaper event loop leaves more CPU to the server under test
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def _worker(args: tuple) -> LoadResult:
    url, bodies, client_ids, start_at, warmup_s, duration_s, concurrency, inputs, headers = args
    result = LoadResult(concurrency, duration_s, warmup_s, inputs)
    _run_loop(_drive(url, bodies, client_ids, start_at, warmup_s, duration_s, result, headers))
    return result


def run_closed_loop(
    url: str,
    bodies: list[bytes],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    inputs_per_request: int = 1,
    processes: int = 1,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Drive ``url`` with ``concurrency`` closed-loop clients and return what completed in the window.

    ``headers``: sent with every request besides the JSON content type (e.g. an API token)."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    if not bodies:
        raise ValueError("bodies must not be empty")
    processes = max(1, min(processes, concurrency))
    # Client ids dealt round-robin so every process gets an even share.
    shares = [list(range(p, concurrency, processes)) for p in range(processes)]
    merged = LoadResult(concurrency, duration_s, warmup_s, inputs_per_request, processes=processes)
    if processes == 1:
        start_at = time.monotonic() + 0.05
        merged.merge(
            _worker(
                (
                    url,
                    bodies,
                    shares[0],
                    start_at,
                    warmup_s,
                    duration_s,
                    concurrency,
                    inputs_per_request,
                    headers,
                )
            )
        )
        return merged
    # CLOCK_MONOTONIC is system-wide on Linux, so one start time lines all processes up.
    start_at = time.monotonic() + 1.0
    jobs = [
        (url, bodies, share, start_at, warmup_s, duration_s, concurrency, inputs_per_request, headers)
        for share in shares
    ]
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        for part in pool.map(_worker, jobs):
            merged.merge(part)
    return merged
