"""Rates, latency quantiles and GPU readings from two reads of Prometheus text (no Prometheus needed).

`kgpu top` (successive scrapes over HTTP) and the control plane's metrics history (the console's
charts) both compute what they show here, the way Prometheus' `rate()` and `histogram_quantile()`
would over the same two samples, so the terminal and the console agree with a Grafana dashboard.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]

# Generation replicas' metrics (read when present: embedding services have none).
TTFT_BUCKETS = "kgpu_generation_time_to_first_token_seconds_bucket"
GENERATED_TOKENS = "kgpu_generation_generated_tokens_total"
RUNNING_SEQUENCES = "kgpu_generation_running_sequences"
WAITING_SEQUENCES = "kgpu_generation_waiting_sequences"
KV_CACHE_USAGE = "kgpu_generation_kv_cache_usage_ratio"


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


def _by(series: dict[Labels, float], key: str) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for labels, value in series.items():
        out[dict(labels).get(key, "")] += value
    return out


def _increase(now: float, before: float | None) -> float:
    """A counter's increase; a restarted process (counter below its last value) counts from zero."""
    return now - before if before is not None and now >= before else now


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


def bucket_increases(prev: Snapshot, cur: Snapshot, name: str) -> dict[str, dict[float, float]]:
    """Per service, each bucket's increase between the two reads (summed over replicas and codes)."""
    buckets: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    before = prev.series(name)
    for labels, value in cur.series(name).items():
        d = dict(labels)
        buckets[d.get("service", "")][float(d["le"])] += _increase(value, before.get(labels))
    return buckets


def _rate_by_service(prev: Snapshot, cur: Snapshot, name: str, dt: float, keep=lambda d: True) -> dict:
    out: dict[str, float] = defaultdict(float)
    before = prev.series(name)
    for labels, value in cur.series(name).items():
        d = dict(labels)
        if keep(d):
            out[d.get("service", "")] += _increase(value, before.get(labels)) / dt
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def sequences_by_service(cur: Snapshot) -> dict[str, float]:
    """Running plus waiting sequences per generation service, summed over its replicas."""
    out = _by(cur.series(RUNNING_SEQUENCES), "service")
    for service, waiting in _by(cur.series(WAITING_SEQUENCES), "service").items():
        out[service] = out.get(service, 0.0) + waiting
    return dict(out)


def _mean_by(series: dict[Labels, float], key: str) -> dict[str, float]:
    totals, counts = _by(series, key), _by(dict.fromkeys(series, 1.0), key)
    return {name: totals[name] / counts[name] for name in totals}


def service_rows(prev: Snapshot, cur: Snapshot) -> list[dict]:
    """Per service over the interval between the reads: requests/s, 5xx/s, p50/p99 latency, replicas;
    for generation services also time to first token (p50/p99), generated tokens/s, running and waiting
    sequences and the mean KV cache usage of its replicas (else None)."""
    dt = max(cur.at - prev.at, 1e-9)
    desired = _by(cur.series("kgpu_service_desired_replicas"), "service")
    ready = _by(cur.series("kgpu_service_ready_replicas"), "service")
    requests = _rate_by_service(prev, cur, "kgpu_gateway_requests_total", dt)
    errors = _rate_by_service(
        prev, cur, "kgpu_gateway_requests_total", dt, lambda d: d.get("code", "").startswith("5")
    )
    latency = bucket_increases(prev, cur, "kgpu_gateway_request_duration_seconds_bucket")
    ttft = bucket_increases(prev, cur, TTFT_BUCKETS)
    tokens = _rate_by_service(prev, cur, GENERATED_TOKENS, dt)
    queued = _by(cur.series("kgpu_queue_depth"), "service")
    generating = {
        dict(labels).get("service", "")
        for name in (GENERATED_TOKENS, RUNNING_SEQUENCES)
        for labels in cur.series(name)
    }
    running = _by(cur.series(RUNNING_SEQUENCES), "service")
    waiting = _by(cur.series(WAITING_SEQUENCES), "service")
    kv_usage = _mean_by(cur.series(KV_CACHE_USAGE), "service")
    rows = []
    for service in sorted(set(desired) | set(requests)):
        p99 = quantile(0.99, latency.get(service, {}))
        generation = service in generating or service in ttft
        rows.append(
            {
                "service": service,
                "replicas": f"{int(ready.get(service, 0))}/{int(desired.get(service, 0))}",
                "ready": ready.get(service, 0.0),
                "desired": desired.get(service, 0.0),
                "rps": requests.get(service, 0.0),
                "errors_per_s": errors.get(service, 0.0),
                "p50_ms": _ms(quantile(0.5, latency.get(service, {}))),
                "p99_ms": _ms(p99),
                "ttft_p50_ms": _ms(quantile(0.5, ttft.get(service, {}))) if generation else None,
                "ttft_p99_ms": _ms(quantile(0.99, ttft.get(service, {}))) if generation else None,
                "tokens_per_s": tokens.get(service, 0.0) if generation else None,
                "running": running.get(service) if generation else None,
                "waiting": waiting.get(service) if generation else None,
                "kv_usage": kv_usage.get(service) if generation else None,
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
                                           "model": d.get("modelName", ""), "replica": d.get("replica", ""),
                                           "project": d.get("project", ""),
                                           "uuid": d.get("UUID", ""), "node": d.get("Hostname", "")})  # fmt: skip
            row[key] = value
    return [rows[k] for k in sorted(rows)]
