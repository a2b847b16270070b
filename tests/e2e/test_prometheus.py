"""A real Prometheus scrapes the running platform with the configuration `kgpu prometheus-config` writes.

Needs Debian's `prometheus` package (/usr/bin/prometheus, promtool); `.ci/run` installs it.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from kgpu.cli.main import app
from kgpu.gateway.metrics import _LATENCY_BUCKETS
from kgpu.telemetry import prometheus_config as pc
from tests.live_server import free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="needs the prometheus and promtool binaries (Debian package `prometheus`, installed by .ci/run)",
)
SERVICE = "default/minilm"
REQUESTS = 24


@pytest.fixture(scope="module")
def config_dir(platform, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prometheus-config")
    result = CliRunner().invoke(
        app, ["prometheus-config", "--output", str(out), "--server", platform.url, "--scrape-interval", "1s"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def prometheus(config_dir, tmp_path_factory):
    port = free_port()
    storage = tmp_path_factory.mktemp("prometheus-data")
    log = (storage / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={config_dir / 'prometheus.yml'}", f"--storage.tsdb.path={storage}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        wait_for(lambda: _ready(client), 30, "Prometheus did not become ready")
        yield client
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        client.close()


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/-/ready").status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(check, timeout: float, message: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(message)


def query(client: httpx.Client, expr: str) -> list[dict]:
    body = client.get("/api/v1/query", params={"query": expr}).json()
    assert body["status"] == "success", body
    return body["data"]["result"]


def scalar(client: httpx.Client, expr: str) -> float | None:
    result = query(client, expr)
    return float(result[0]["value"][1]) if result else None


def test_promtool_accepts_the_generated_config_and_rules(config_dir):
    check = subprocess.run(
        [PROMTOOL, "check", "config", "prometheus.yml"], cwd=config_dir, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 rule files found" in check.stdout
    rules = subprocess.run(
        [PROMTOOL, "check", "rules", pc.RECORDING_FILE, pc.ALERTS_FILE],
        cwd=config_dir, capture_output=True, text=True,
    )  # fmt: skip
    assert rules.returncode == 0, rules.stdout + rules.stderr


def test_prometheus_counts_requests_and_records_latency_and_rules(platform, prometheus):
    platform.wait_ready(len([r for r in platform.replicas() if r["phase"] == "Ready"]) or 1)
    ready = {r["name"] for r in platform.replicas() if r["phase"] == "Ready"}

    def targets_up() -> bool:
        active = prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
        up = {(t["labels"]["job"], t["labels"].get("replica", "")) for t in active if t["health"] == "up"}
        return ("kgpu", "") in up and ready <= {r for job, r in up if job == "kgpu-replicas"}

    wait_for(targets_up, 20, "Prometheus did not find the server and every ready replica up")
    count = f'sum(kgpu_gateway_requests_total{{service="{SERVICE}",code="200"}})'
    replica_count = f'sum(kgpu_requests_total{{service="{SERVICE}",code="200"}})'
    latencies = []
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        # rate() sees only increases after a series' first sample: make the series exist and be scraped.
        before = (scalar(prometheus, count) or 0.0) + 1
        replica_before = (scalar(prometheus, replica_count) or 0.0) + 1
        assert http.post("/v1/embeddings", json={"model": "minilm", "input": "warm-up"}).status_code == 200
        wait_for(
            lambda: (
                (scalar(prometheus, count) or 0) >= before
                and (scalar(prometheus, replica_count) or 0) >= replica_before
            ),
            15,
            "the warm-up request was never scraped",
        )
        for i in range(REQUESTS):
            started = time.perf_counter()
            response = http.post("/v1/embeddings", json={"model": "minilm", "input": f"request {i}"})
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text

    wait_for(lambda: (scalar(prometheus, count) or 0) - before == REQUESTS, 15, "request count never matched")
    assert (scalar(prometheus, count) or 0) - before == REQUESTS

    # The replicas saw the same requests, and their series carry the shared labels.
    wait_for(
        lambda: (scalar(prometheus, replica_count) or 0) - replica_before == REQUESTS,
        15,
        "the replicas' request count never matched",
    )
    replica_series = query(prometheus, f'kgpu_requests_total{{service="{SERVICE}",code="200"}}')
    for series in replica_series:
        labels = series["metric"]
        assert labels["job"] == "kgpu-replicas" and labels["project"] == "default"
        assert labels["replica"] in ready and labels["node"]

    # p50 from the gateway histogram: positive, and no larger than the bucket holding the slowest request.
    # A series born with the first request needs a second scrape before rate() sees it.
    p50_expr = (
        "histogram_quantile(0.5, sum by (le) "
        f'(rate(kgpu_gateway_request_duration_seconds_bucket{{service="{SERVICE}"}}[1m])))'
    )
    p50 = wait_for(
        lambda: (v := scalar(prometheus, p50_expr)) is not None and math.isfinite(v) and v,
        15,
        "no latency quantile from Prometheus",
    )
    ceiling = min(b for b in _LATENCY_BUCKETS if b >= max(latencies))
    assert 0 < p50 <= ceiling, (p50, max(latencies))

    # Recording rules: per-service series with the project derived from the service.
    def recorded(name: str) -> list[dict]:
        return query(prometheus, f'{name}{{service="{SERVICE}",project="default"}}')

    def positive(name: str) -> bool:
        series = recorded(name)
        return bool(series) and float(series[0]["value"][1]) > 0  # NaN (no data yet) is not > 0

    for name in (pc.SERVICE_RPS, pc.SERVICE_P50, pc.SERVICE_P99, pc.SERVICE_QUEUE_P99):
        wait_for(lambda name=name: positive(name), 15, f"{name} never recorded a positive value")
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == 11
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
