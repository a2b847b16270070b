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


def test_generation_rows_show_ttft_tokens_sequences_and_kv_usage_and_top_renders_them() -> None:
    from rich.console import Console

    from kgpu.cli.top import render_frame
    from kgpu.serving.generation_metrics import GenerationMetrics
    from kgpu.serving.metrics import ReplicaMetrics

    gateway = GatewayMetrics()
    gateway.desired_replicas.labels(service="default/chat").set(1)
    gateway.ready_replicas.labels(service="default/chat").set(1)
    replica = ReplicaMetrics("default/chat", "chat-0")
    generation = GenerationMetrics(replica)
    generation.track_engine(lambda: 5, lambda: 3, lambda: 0.25)
    first = Snapshot(at=10.0)
    first.add_text(generate_latest(gateway.registry).decode())
    first.add_text(generate_latest(replica.registry).decode())
    for _ in range(4):
        generation.observe_piece(0.0, 0.040, first=True)
    generation.count_tokens(prompt_tokens=100, generated=200)
    second = Snapshot(at=12.0)
    second.add_text(generate_latest(gateway.registry).decode())
    second.add_text(generate_latest(replica.registry).decode())
    [row] = service_rows(first, second)
    assert (row["running"], row["waiting"], row["kv_usage"]) == (5, 3, 0.25)
    assert row["tokens_per_s"] == pytest.approx(100.0)
    assert 25 <= row["ttft_p50_ms"] <= 50
    console = Console(width=200, record=True)
    console.print(render_frame(first, second))
    [line] = [ln for ln in console.export_text().splitlines() if "default/chat" in ln]
    assert "5/3" in line and "25%" in line and "100.0" in line
