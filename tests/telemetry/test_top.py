from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from kgpu.gateway.metrics import GatewayMetrics
from kgpu.telemetry.snapshot import Snapshot, quantile, service_rows


def test_quantile_interpolates_like_prometheus() -> None:
    buckets = {0.1: 50.0, 0.2: 90.0, 0.4: 100.0, float("inf"): 100.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.7, buckets) == pytest.approx(0.15)
    assert quantile(0.99, buckets) == pytest.approx(0.38)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None


def test_service_rows_come_from_the_difference_between_two_scrapes() -> None:
    metrics = GatewayMetrics()
    metrics.desired_replicas.labels(service="default/minilm").set(2)
    metrics.ready_replicas.labels(service="default/minilm").set(1)
    for _ in range(10):
        metrics.observe("default/minilm", 200, 0.003)  # before the first scrape: not in the rate
    first = Snapshot(at=100.0)
    first.add_text(generate_latest(metrics.registry).decode())
    for _ in range(30):
        metrics.observe("default/minilm", 200, 0.2)
    second = Snapshot(at=102.0)
    second.add_text(generate_latest(metrics.registry).decode())
    [row] = service_rows(first, second)
    assert row["service"] == "default/minilm" and row["replicas"] == "1/2"
    assert row["rps"] == pytest.approx(15.0)
    assert 100 < row["p99_ms"] <= 250  # only the slow requests of the second interval count
