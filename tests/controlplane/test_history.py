"""The console's chart history: ring buffers the control plane fills from its own metrics and the replicas'."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import Response
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from kgpu.controlplane.auth import bootstrap_cluster_admin
from kgpu.controlplane.history import SERVICE_SERIES, MetricsSampler, RingHistory, pool_values, registry_text
from kgpu.controlplane.server import create_server_app
from kgpu.gateway.metrics import GatewayMetrics
from tests.controlplane.test_api import service, wait_for
from tests.controlplane.test_auth import bearer, make_platform, services_path, setup_projects

SERVICE = "default/chat"


def test_ring_keeps_only_the_window_and_drops_a_group_that_stopped():
    ring = RingHistory(window_s=10, interval_s=1)
    assert ring.size == 11
    for t in range(30):
        ring.record(float(t), "service:a/b", {"rps": float(t)})
    data = ring.read("service:a/b", ("rps", "p99_ms"), now=29.0)
    assert data["time"] == [float(t) for t in range(19, 30)]
    assert data["series"]["rps"] == [float(t) for t in range(19, 30)]
    assert data["series"]["p99_ms"] == [None] * 11  # never sampled: a gap, not a zero
    ring.record(30.0, "gpu:n/0", {"util_pct": 5.0})
    ring.prune(now=39.5)  # the service's last sample (29) left the window; the GPU's (30) did not
    assert ring.groups("service") == [] and ring.groups("gpu") == ["gpu:n/0"]


def _replica_app(registry: CollectorRegistry) -> FastAPI:
    app = FastAPI()

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain")

    return app


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_rates_quantiles_and_generation_metrics_between_two_samples():
    gateway = GatewayMetrics()
    gateway.desired_replicas.labels(service=SERVICE).set(2)
    gateway.ready_replicas.labels(service=SERVICE).set(1)
    # A generation replica's own metrics, as its runtime exports them, read over HTTP.
    replica = CollectorRegistry()
    ttft = Histogram(
        "kgpu_generation_time_to_first_token_seconds", "TTFT", ["service"], registry=replica,
        buckets=(0.05, 0.1, 0.2, 0.4, 0.8),
    )  # fmt: skip
    tokens = Counter("kgpu_generation_generated_tokens", "tokens", ["service"], registry=replica)
    clock = Clock()
    ring = RingHistory(window_s=900, interval_s=2)
    sampler = MetricsSampler(
        ring,
        registry_text(gateway.registry),
        statuses=lambda: None,
        replica_urls=lambda: [("chat-0", "http://chat-0")],
        pools=lambda: {},
        clock=clock,
    )
    transport = httpx.ASGITransport(app=_replica_app(replica))
    async with httpx.AsyncClient(transport=transport) as http:
        await sampler.sample(http)  # the first read only sets the baseline
        assert ring.groups("service") == []
        for _ in range(20):
            gateway.observe(SERVICE, 200, 0.3)
        for _ in range(4):
            gateway.observe(SERVICE, 503, 0.01)
        for _ in range(10):
            ttft.labels(service=SERVICE).observe(0.15)
        tokens.labels(service=SERVICE).inc(500)
        clock.now += 4.0
        await sampler.sample(http)
    data = ring.read(f"service:{SERVICE}", SERVICE_SERIES, now=clock.now)
    point = {name: values[-1] for name, values in data["series"].items()}
    assert point["rps"] == pytest.approx(24 / 4)
    assert point["errors_per_s"] == pytest.approx(4 / 4)
    assert 250 < point["p99_ms"] <= 500 and point["p50_ms"] > 250  # 20 of 24 took 0.3 s
    assert (point["ready"], point["desired"]) == (1, 2)
    assert 100 < point["ttft_p50_ms"] <= 200
    assert point["tokens_per_s"] == pytest.approx(500 / 4)


def test_an_embedding_service_has_no_generation_series():
    gateway = GatewayMetrics()
    gateway.observe("default/minilm", 200, 0.01)
    ring = RingHistory()
    sampler = MetricsSampler(ring, registry_text(gateway.registry), lambda: None, list, dict)

    async def twice() -> None:
        async with httpx.AsyncClient() as http:
            await sampler.sample(http)
            gateway.observe("default/minilm", 200, 0.01)
            await sampler.sample(http)

    asyncio.run(twice())
    series = ring.read("service:default/minilm", SERVICE_SERIES)["series"]
    assert series["rps"][-1] > 0
    assert series["ttft_p50_ms"] == [None] and series["tokens_per_s"] == [None]


def test_pool_values_count_ready_nodes_and_allocated_gpu_devices():
    status = {
        "nodes": 3,
        "readyNodes": 2,
        "allocatable": {"cpu": "96", "nvidia.com/mig-3g.71gb": 16, "nvidia.com/mig-4g.71gb": 16},
        "nodeList": [
            {"allocated": {"nvidia.com/mig-3g.71gb": 2, "cpu": 4}},
            {"allocated": {"nvidia.com/mig-4g.71gb": 1}},
            {"allocated": {}},
        ],
    }
    assert pool_values(status) == {
        "nodes": 3.0,
        "ready_nodes": 2.0,
        "gpus_allocated": 3.0,
        "gpus_allocatable": 32.0,
    }


def test_history_follows_project_access_and_restart_is_an_admin_write(tmp_path):
    platform = make_platform(tmp_path)
    app = create_server_app(platform, auth=True)
    with TestClient(app) as client:
        admin = bootstrap_cluster_admin(app.state.access.store, tmp_path)
        tokens = setup_projects(client, admin)
        put = client.put(services_path("team-a", "svc"), json=service("svc"), headers=bearer(tokens["a"]))
        assert put.status_code == 201, put.text
        history = "/api/v1/history/namespaces/team-a/inferenceservices/svc"
        assert client.get(history, headers=bearer(tokens["a-viewer"])).json()["windowSeconds"] == 900
        assert client.get(history, headers=bearer(tokens["b"])).status_code == 403
        missing = client.get(history.replace("/svc", "/nope"), headers=bearer(tokens["a"]))
        assert missing.status_code == 404 and "nope" in missing.text

        # A GPU shared with another project's replica: its readings show, its replica's name does not.
        meta = {"node": "n", "gpu": "0", "mig": "", "model": "H200", "replica": "b-0", "projects": ["team-b"]}
        platform.history.record(time.time(), "gpu:n/0", {"util_pct": 5.0}, meta)
        seen_by_a = client.get("/api/v1/history/gpus", headers=bearer(tokens["a"])).json()["items"]["n/0"]
        assert seen_by_a["meta"]["replica"] == "replicas of other projects" and seen_by_a["series"][
            "util_pct"
        ] == [5.0]
        seen_by_b = client.get("/api/v1/history/gpus", headers=bearer(tokens["b"])).json()["items"]["n/0"]
        assert seen_by_b["meta"]["replica"] == "b-0" and "projects" not in seen_by_b["meta"]

        restart = services_path("team-a", "svc") + "/replicas/svc-0/restart"
        forged = client.post(restart, headers=bearer(tokens["a-viewer"]))
        assert forged.status_code == 403 and "can only read" in forged.text
        absent = client.post(restart.replace("svc-0", "svc-9"), headers=bearer(tokens["a"]))
        assert absent.status_code == 404 and "svc-9" in absent.text
        # The test backend starts no processes on this machine: nothing here to restart.
        wait_for(lambda: platform.backend.replicas("team-a/svc"))
        elsewhere = client.post(restart, headers=bearer(tokens["a"]))
        assert elsewhere.status_code == 409 and "does not run on this machine" in elsewhere.text
        assert (
            client.get("/api/v1/gpu-layout", headers=bearer(tokens["a"])).json()["items"][0]["backend"]
            == "local"
        )


def test_a_deleted_service_gets_no_more_samples_though_its_gauges_stay():
    gateway = GatewayMetrics()
    for key in ("default/live", "default/deleted"):
        gateway.desired_replicas.labels(service=key).set(1)  # a gauge stays after its service goes
        gateway.observe(key, 200, 0.01)
    ring = RingHistory()
    sampler = MetricsSampler(ring, registry_text(gateway.registry), lambda: {"default/live"}, list, dict)

    async def twice() -> None:
        async with httpx.AsyncClient() as http:
            await sampler.sample(http)
            await sampler.sample(http)

    asyncio.run(twice())
    assert ring.groups("service") == ["service:default/live"]
