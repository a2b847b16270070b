"""A command runtime's own metrics, scraped from a real HTTP server, relabelled with the service's labels
and written as one valid exposition (checked by prometheus_client's parser and, where installed, promtool)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import threading
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kgpu.telemetry import runtime_metrics as runtime_metrics_module
from kgpu.telemetry.runtime_metrics import UP_METRIC, RuntimeTarget, relabelled, runtime_metrics
from tests.live_server import serving


def their_server(served: int) -> FastAPI:
    """A server with metrics of its own, one of them labelled `service` by the server itself."""
    registry = CollectorRegistry()
    requests = Counter("their_requests", "Requests served.", ["service"], registry=registry)
    requests.labels(service="embeddings").inc(served)
    latency = Histogram("their_latency_seconds", "Latency.", registry=registry, buckets=(0.1, 1.0))
    latency.observe(0.05)
    Counter("kgpu_gateway_requests", "A name kgpu uses itself.", registry=registry).inc()
    app = FastAPI()

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type="text/plain; version=0.0.4")

    @app.get("/broken")
    def broken() -> PlainTextResponse:
        return PlainTextResponse("this is { not the text format")

    return app


def _families(text: bytes) -> dict:
    return {family.name: family for family in text_string_to_metric_families(text.decode())}


def test_a_label_the_server_sets_itself_is_kept_as_exported():
    (family,) = relabelled('their_requests_total{service="embeddings"} 3\n', {"service": "default/svc"})
    (sample,) = family.samples
    assert sample.labels == {"service": "default/svc", "exported_service": "embeddings"}


def test_two_replicas_are_one_family_each_with_its_labels_and_an_up_series():
    with serving(their_server(3)) as first, serving(their_server(5)) as second:
        targets = [
            RuntimeTarget("team-a/emb", "emb-0", f"{first}/metrics"),
            RuntimeTarget("team-a/emb", "emb-1", f"{second}/metrics"),
            RuntimeTarget("team-a/emb", "emb-2", f"{second}/broken"),
            RuntimeTarget("team-a/emb", "emb-3", "http://127.0.0.1:9/metrics"),  # nothing listens
        ]

        async def scrape() -> bytes:
            async with httpx.AsyncClient() as client:
                return await runtime_metrics(client, targets, taken={"kgpu_gateway_requests"})

        text = asyncio.run(scrape())
    families = _families(text)
    counts = {s.labels["replica"]: s.value for s in families["their_requests"].samples}
    assert counts == {"emb-0": 3.0, "emb-1": 5.0}
    for sample in families["their_requests"].samples:
        assert sample.labels["project"] == "team-a" and sample.labels["service"] == "team-a/emb"
        assert sample.labels["exported_service"] == "embeddings"
    buckets = [s for s in families["their_latency_seconds"].samples if s.name.endswith("_bucket")]
    assert len(buckets) == 6 and families["their_latency_seconds"].type == "histogram"
    assert "kgpu_gateway_requests" not in families  # kgpu's own family name stays kgpu's
    up = {s.labels["replica"]: s.value for s in families[UP_METRIC].samples}
    assert up == {"emb-0": 1.0, "emb-1": 1.0, "emb-2": 0.0, "emb-3": 0.0}
    if promtool := shutil.which("promtool"):
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=30)
        assert check.returncode == 0, check.stderr.decode()


def test_no_target_adds_nothing():
    async def scrape() -> bytes:
        async with httpx.AsyncClient() as client:
            return await runtime_metrics(client, [], taken=set())

    assert asyncio.run(scrape()) == b""


def hostile_server() -> FastAPI:
    """A server that answers slowly, without end, or with series named like kgpu's."""
    app = FastAPI()

    @app.get("/slow")
    def slow() -> StreamingResponse:
        async def drip():
            for _ in range(40):  # a line every 0.1 s: each read is quick, the whole is not
                yield b"# a comment\n"
                await asyncio.sleep(0.1)

        return StreamingResponse(drip(), media_type="text/plain")

    @app.get("/huge")
    def huge() -> StreamingResponse:
        def endless():
            for _ in range(64):
                yield b"# " + b"x" * 65534 + b"\n"

        return StreamingResponse(endless(), media_type="text/plain")

    @app.get("/impostor")
    def impostor() -> PlainTextResponse:
        return PlainTextResponse(
            f'{UP_METRIC}{{replica="other-0"}} 1\n'
            "kgpu_service_requests_total 7\n"
            "# TYPE kgpu counter\nkgpu_total 1\n"
            "their_requests_total 2\n"
        )

    return app


def test_a_slow_huge_or_impostor_replica_costs_its_own_scrape_only(monkeypatch):
    monkeypatch.setattr(runtime_metrics_module, "SCRAPE_TIMEOUT_S", 1.0)
    monkeypatch.setattr(runtime_metrics_module, "MAX_SCRAPE_BYTES", 1024 * 1024)
    with serving(hostile_server()) as url:
        targets = [
            RuntimeTarget("team-b/x", "x-0", f"{url}/slow"),
            RuntimeTarget("team-b/x", "x-1", f"{url}/huge"),
            RuntimeTarget("team-b/x", "x-2", f"{url}/impostor"),
            RuntimeTarget("team-b/x", "x-3", f"{url}/metrics\r\nHost: elsewhere"),  # not a URL
        ]

        async def scrape() -> bytes:
            async with httpx.AsyncClient() as client:
                return await runtime_metrics(client, targets, taken=set())

        started = time.monotonic()
        text = asyncio.run(scrape())
        elapsed = time.monotonic() - started
    assert elapsed < 3.0  # the slow one was cut at the timeout, not read to its end (4 s)
    families = _families(text)
    assert [name for name in families if name.startswith("kgpu")] == [UP_METRIC]
    up = {s.labels["replica"]: s.value for s in families[UP_METRIC].samples}
    assert up == {"x-0": 0.0, "x-1": 0.0, "x-2": 1.0, "x-3": 0.0}
    (sample,) = families["their_requests_total"].samples
    assert sample.labels == {"project": "team-b", "service": "team-b/x", "replica": "x-2"}


@pytest.mark.parametrize("path", ["/metrics\r\nHost: elsewhere", "/metrics\n", "/a b", "/caf\u00e9"])
def test_a_metrics_path_is_printable_ascii(path):
    from pydantic import ValidationError

    from kgpu.api.models import RuntimeSpec

    with pytest.raises(ValidationError, match="metricsPath"):
        RuntimeSpec(kind="command", command=["s"], metrics_path=path)
    with pytest.raises(ValidationError, match="readinessPath"):
        RuntimeSpec(kind="command", command=["s"], readiness_path=path)


@pytest.mark.parametrize("path", ["metrics", "/metrics"])
def test_a_metrics_path_must_be_absolute(path):
    from kgpu.api.errors import ResourceValidationError
    from kgpu.api.io import parse_resource

    document = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "svc"},
        "spec": {
            "model": {"uri": "/m"},
            "runtime": {"kind": "command", "command": ["s"], "metricsPath": path},
        },
    }
    if path.startswith("/"):
        assert parse_resource(document).spec.runtime.metrics_path == "/metrics"
    else:
        with pytest.raises(ResourceValidationError, match="spec.runtime.metricsPath"):
            parse_resource(document)


def test_the_pages_are_parsed_off_the_event_loop(monkeypatch):
    parsed_on = []

    def recording(text, labels):
        parsed_on.append(threading.current_thread())
        return relabelled(text, labels)

    monkeypatch.setattr(runtime_metrics_module, "relabelled", recording)
    with serving(their_server(1)) as url:

        async def scrape() -> bytes:
            async with httpx.AsyncClient() as client:
                return await runtime_metrics(client, [RuntimeTarget("a/b", "b-0", f"{url}/metrics")], set())

        text = asyncio.run(scrape())
    assert "their_requests" in _families(text)
    assert parsed_on and threading.main_thread() not in parsed_on
