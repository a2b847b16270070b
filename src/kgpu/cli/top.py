"""`kgpu top`: GPUs and services at a glance, from successive scrapes of the platform's metrics.

Rates and latency quantiles come from the difference between two scrapes (like `kubectl top`, nothing is
stored): the server's `/metrics` (gateway and GPU series) and each ready replica's `/metrics`.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Group
from rich.table import Table

from kgpu.cli.client import KgpuClient

Labels = tuple[tuple[str, str], ...]


@dataclass
class Snapshot:
    at: float
    samples: dict[str, dict[Labels, float]] = field(default_factory=lambda: defaultdict(dict))

    def add_text(self, text: str, extra: dict[str, str] | None = None) -> None:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = tuple(sorted({**sample.labels, **(extra or {})}.items()))
                self.samples[sample.name][labels] = sample.value

    def series(self, name: str) -> dict[Labels, float]:
        return self.samples.get(name, {})


def scrape(client: KgpuClient) -> Snapshot:
    snapshot = Snapshot(at=time.monotonic())
    snapshot.add_text(client._request("GET", "/metrics").text)
    for replica in client.replicas():
        if replica.get("phase") != "Ready" or not replica.get("url"):
            continue
        try:
            text = httpx.get(f"{replica['url']}/metrics", timeout=5).text
        except httpx.HTTPError:
            continue  # a replica going away between the list and the scrape
        snapshot.add_text(text, {"replica": replica["name"]})
    return snapshot


def _by(series: dict[Labels, float], key: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in series.items():
        out[dict(labels).get(key, "")] += value
    return out


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile over cumulative bucket counts {upper bound: count}."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            return lower + (bound - lower) * ((rank - below) / (count - below) if count > below else 0)
        lower, below = bound, count
    return None


def service_rows(prev: Snapshot, cur: Snapshot) -> list[dict]:
    dt = max(cur.at - prev.at, 1e-9)
    desired = _by(cur.series("kgpu_service_desired_replicas"), "service")
    ready = _by(cur.series("kgpu_service_ready_replicas"), "service")
    now_requests = _by(cur.series("kgpu_gateway_requests_total"), "service")
    then_requests = _by(prev.series("kgpu_gateway_requests_total"), "service")
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    name = "kgpu_gateway_request_duration_seconds_bucket"
    before = prev.series(name)
    for labels, value in cur.series(name).items():
        d = dict(labels)
        buckets[d["service"]][float(d["le"])] += value - before.get(labels, 0.0)
    queued = _by(cur.series("kgpu_queue_depth"), "service")
    rows = []
    for service in sorted(set(desired) | set(now_requests)):
        p99 = quantile(0.99, buckets.get(service, {}))
        rows.append(
            {
                "service": service,
                "replicas": f"{int(ready.get(service, 0))}/{int(desired.get(service, 0))}",
                "rps": (now_requests.get(service, 0) - then_requests.get(service, 0)) / dt,
                "p99_ms": None if p99 is None else p99 * 1000,
                "queued": int(queued.get(service, 0)),
            }
        )
    return rows


def gpu_rows(cur: Snapshot) -> list[dict]:
    rows: dict[Labels, dict] = {}
    for metric, key in (
        ("DCGM_FI_DEV_GPU_UTIL", "util"),
        ("DCGM_FI_DEV_FB_USED", "used"),
        ("DCGM_FI_DEV_FB_FREE", "free"),
        ("DCGM_FI_DEV_POWER_USAGE", "power"),
        ("DCGM_FI_DEV_GPU_TEMP", "temp"),
    ):
        for labels, value in cur.series(metric).items():
            d = dict(labels)
            device = (
                ("gpu", d.get("gpu", "")),
                ("mig", d.get("GPU_I_PROFILE", "")),
                ("id", d.get("GPU_I_ID", "")),
            )
            row = rows.setdefault(device, {"gpu": d.get("gpu", ""), "mig": d.get("GPU_I_PROFILE", ""),
                                           "model": d.get("modelName", ""), "replica": d.get("replica", "")})  # fmt: skip
            row[key] = value
    return [rows[k] for k in sorted(rows)]


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else pattern.format(value)


def render_frame(prev: Snapshot, cur: Snapshot) -> Group:
    gpus = Table(title="GPUs", title_justify="left")
    for column in ("GPU", "MODEL", "UTIL", "MEMORY", "POWER", "TEMP", "REPLICAS"):
        gpus.add_column(column)
    rows = gpu_rows(cur)
    for row in rows:
        used, free = row.get("used"), row.get("free")
        memory = "-" if used is None else f"{used:.0f}/{used + (free or 0):.0f} MiB"
        gpus.add_row(
            row["gpu"] + (f" {row['mig']}" if row["mig"] else ""),
            row["model"],
            _fmt(row.get("util"), "{:.0f}%"),
            memory,
            _fmt(row.get("power"), "{:.0f} W"),
            _fmt(row.get("temp"), "{:.0f} C"),
            row["replica"] or "-",
        )
    if not rows:
        gpus.add_row("-", "no NVIDIA GPU metrics (CPU-only node)", "", "", "", "", "")
    services = Table(title="Services", title_justify="left")
    for column in ("SERVICE", "READY", "RPS", "P99", "QUEUED"):
        services.add_column(column)
    for row in service_rows(prev, cur):
        services.add_row(
            row["service"],
            row["replicas"],
            f"{row['rps']:.1f}",
            _fmt(row["p99_ms"], "{:.1f} ms"),
            str(row["queued"]),
        )
    return Group(gpus, services)
