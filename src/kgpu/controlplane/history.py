"""The last 15 minutes of what the console charts, kept by the control plane itself.

The console's charts must work where no Prometheus runs (`kgpu up` on a laptop), so the control
plane samples what Prometheus would scrape: every `interval_s` it reads its own registry (gateway
and GPU exporter), each ready replica's `/metrics` (generation metrics where a runtime exports
them) and the status of services and pools, turns two successive reads into rates and quantiles
(`telemetry.snapshot`, as `kgpu top` does), and appends the results to fixed-length ring buffers.
Memory stays bounded: at most window/interval samples per service, GPU and pool; a series that
stops being sampled (a deleted service) is dropped once its last sample leaves the window.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable

import httpx
from prometheus_client import generate_latest

from kgpu.telemetry.snapshot import Snapshot, gpu_rows, service_rows

log = logging.getLogger("kgpu.history")

WINDOW_S = 15 * 60.0
DEFAULT_INTERVAL_S = 2.0
# A replica that does not answer its /metrics this fast is skipped for this sample, not waited for.
SCRAPE_TIMEOUT_S = 1.0

# What each chart reads, per kind of group (the console names the series the same way).
SERVICE_SERIES = (
    "rps",
    "errors_per_s",
    "p50_ms",
    "p99_ms",
    "ready",
    "desired",
    "ttft_p50_ms",
    "ttft_p99_ms",
    "tokens_per_s",
)
GPU_SERIES = ("util_pct", "memory_used_mib", "memory_total_mib", "power_w")
POOL_SERIES = ("nodes", "ready_nodes", "gpus_allocated", "gpus_allocatable")

Values = dict[str, float | None]


class RingHistory:
    """Per group ("service:ns/name", "gpu:host/0", "pool:ns/name"), the samples inside the window."""

    def __init__(self, window_s: float = WINDOW_S, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.window_s = window_s
        self.interval_s = interval_s
        self.size = math.ceil(window_s / interval_s) + 1
        self._groups: dict[str, deque[tuple[float, Values]]] = {}
        self.meta: dict[str, dict] = {}  # what a chart's title says (a GPU's model, its node)

    def record(self, at: float, group: str, values: Values, meta: dict | None = None) -> None:
        self._groups.setdefault(group, deque(maxlen=self.size)).append((at, dict(values)))
        if meta is not None:
            self.meta[group] = meta

    def prune(self, now: float) -> None:
        for group in [g for g, samples in self._groups.items() if samples[-1][0] < now - self.window_s]:
            del self._groups[group]
            self.meta.pop(group, None)

    def groups(self, kind: str) -> list[str]:
        return sorted(g for g in self._groups if g.startswith(f"{kind}:"))

    def read(self, group: str, names: tuple[str, ...], now: float | None = None) -> dict:
        """Columns as uPlot draws them: one time axis (epoch seconds) and one list per series."""
        now = time.time() if now is None else now
        samples = [(t, v) for t, v in self._groups.get(group, ()) if t >= now - self.window_s]
        return {
            "time": [round(t, 3) for t, _ in samples],
            "series": {name: [_round(v.get(name)) for _, v in samples] for name in names},
            "meta": self.meta.get(group, {}),
        }


def _round(value: float | None) -> float | None:
    if value is None or math.isnan(value):
        return None
    return round(value, 4)


class MetricsSampler:
    """Fills a RingHistory from the platform every `interval_s` (a task of the server's event loop)."""

    def __init__(
        self,
        history: RingHistory,
        registry_text: Callable[[], bytes],
        statuses: Callable[[], set[str] | None],
        replica_urls: Callable[[], list[tuple[str, str]]],
        pools: Callable[[], dict[str, Values]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`statuses` refreshes the replica gauges (ready/desired) the registry then holds, and names
        the services that exist (a deleted service's gauges stay in the registry: it gets no more
        samples, so it leaves the history with the window; None: every service in the registry);
        `replica_urls` lists (replica, URL) of ready replicas; `pools` gives each pool's values."""
        self.history = history
        self._registry_text = registry_text
        self._statuses = statuses
        self._replica_urls = replica_urls
        self._pools = pools
        self._clock = clock
        self._previous: Snapshot | None = None
        self._services: set[str] | None = None

    @property
    def latest(self) -> Snapshot | None:
        """The last read (the autoscaler's view of the replicas' generation load)."""
        return self._previous

    async def run(self) -> None:
        async with httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S) as http:
            while True:
                try:
                    await self.sample(http)
                except Exception:  # one bad sample must not end the charts for good
                    log.exception("metrics history sample failed")
                await asyncio.sleep(self.history.interval_s)

    async def read(self, http: httpx.AsyncClient) -> Snapshot:
        self._services = self._statuses()
        snapshot = Snapshot(at=self._clock())
        snapshot.add_text(self._registry_text().decode())
        replicas = self._replica_urls()
        answers = await asyncio.gather(
            *(http.get(f"{url}/metrics") for _, url in replicas), return_exceptions=True
        )
        for (name, _url), answer in zip(replicas, answers, strict=True):
            if isinstance(answer, httpx.Response) and answer.status_code == 200:
                snapshot.add_text(answer.text, {"replica": name})
        return snapshot

    async def sample(self, http: httpx.AsyncClient) -> None:
        current = await self.read(http)
        now = self._clock()
        previous, self._previous = self._previous, current
        if previous is not None:
            for row in service_rows(previous, current):
                if self._services is not None and row["service"] not in self._services:
                    continue
                self.history.record(now, f"service:{row['service']}", {k: row[k] for k in SERVICE_SERIES})
        for row in gpu_rows(current):
            used, free = row.get("used"), row.get("free")
            device = row["gpu"] + (f"/{row['mig']}" if row["mig"] else "")
            values = {
                "util_pct": row.get("util"),
                "memory_used_mib": used,
                "memory_total_mib": None if used is None else used + (free or 0.0),
                "power_w": row.get("power"),
            }
            meta = {"node": row["node"], "gpu": row["gpu"], "mig": row["mig"], "model": row["model"]}
            self.history.record(
                now,
                f"gpu:{row['node']}/{device}",
                values,
                {**meta, "replica": row["replica"], "projects": [p for p in row["project"].split(",") if p]},
            )
        for pool, values in self._pools().items():
            self.history.record(now, f"pool:{pool}", values)
        self.history.prune(now)


def pool_values(status: dict) -> Values:
    """A pool's chart values from its status: nodes, and GPU devices (whole GPUs, MIG slices or
    shares, as the pool advertises them) allocated out of allocatable."""
    node_list = status.get("nodeList") or []
    allocated = sum(
        v
        for node in node_list
        for k, v in (node.get("allocated") or {}).items()
        if k not in ("cpu", "memory")
    )
    allocatable = sum(v for k, v in (status.get("allocatable") or {}).items() if isinstance(v, int))
    return {
        "nodes": float(status.get("nodes", 0)),
        "ready_nodes": float(status.get("readyNodes", status.get("nodes", 0))),
        "gpus_allocated": float(allocated),
        "gpus_allocatable": float(allocatable),
    }


def registry_text(registry) -> Callable[[], bytes]:
    return lambda: generate_latest(registry)
