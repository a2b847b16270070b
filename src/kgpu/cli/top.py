"""`kgpu top`: GPUs and services at a glance, from successive scrapes of the platform's metrics.

Rates and latency quantiles come from the difference between two scrapes (like `kubectl top`, nothing is
stored): the server's `/metrics` (gateway and GPU series) and each ready replica's `/metrics`.
"""

from __future__ import annotations

import time

import httpx
from rich.console import Group
from rich.table import Table

from kgpu.cli.client import KgpuClient
from kgpu.telemetry.snapshot import Snapshot, gpu_rows, service_rows


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
    # Generation services also show time to first token, tokens/s, running/waiting sequences and KV usage.
    for column in ("SERVICE", "READY", "RPS", "P99", "QUEUED", "TTFT P50", "TOKENS/S", "SEQS R/W", "KV"):
        services.add_column(column)
    for row in service_rows(prev, cur):
        sequences = "-" if row["running"] is None else f"{row['running']:.0f}/{(row['waiting'] or 0):.0f}"
        services.add_row(
            row["service"],
            row["replicas"],
            f"{row['rps']:.1f}",
            _fmt(row["p99_ms"], "{:.1f} ms"),
            str(row["queued"]),
            _fmt(row["ttft_p50_ms"], "{:.0f} ms"),
            _fmt(row["tokens_per_s"], "{:.1f}"),
            sequences,
            _fmt(None if row["kv_usage"] is None else row["kv_usage"] * 100, "{:.0f}%"),
        )
    return Group(gpus, services)
