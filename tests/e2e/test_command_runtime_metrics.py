"""A command runtime's own `/metrics`, scraped by `kgpu up` and served on its `/metrics` with the service's
labels, next to kgpu's: a real process (prometheus_client's own HTTP server) run as two replicas."""

from __future__ import annotations

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.command_services import SERVICES, apply, wait_ready

# Serves Prometheus text on every path (prometheus_client's exposition server): the readiness probe gets
# 200 once it listens. Its counter carries a `service` label of its own.
METERED_SERVER = """
import os, time
from prometheus_client import Counter, start_http_server
Counter("metered_batches", "Batches computed.", ["service"]).labels(service="theirs").inc(7)
start_http_server(int(os.environ["PORT"]), addr="127.0.0.1")
while True:
    time.sleep(1)
"""


@pytest.fixture
def metered(platform, tmp_path):
    document = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "metered", "namespace": "default"},
        "spec": {
            "model": {"uri": str(tmp_path)},
            "runtime": {
                "kind": "command",
                "command": [sys.executable, "-c", METERED_SERVER],
                "readinessPath": "/metrics",
                "metricsPath": "/metrics",
            },
            "replicas": 2,
        },
    }
    apply(platform, document)
    wait_ready(platform, "metered", 2)
    yield platform
    platform.http.delete(f"{SERVICES}/metered")


def test_a_command_runtimes_metrics_are_on_kgpus_metrics_with_the_services_labels(metered):
    text = metered.http.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    batches = families["metered_batches"]
    assert batches.type == "counter"
    by_replica = {s.labels["replica"]: s for s in batches.samples if s.name == "metered_batches_total"}
    assert set(by_replica) == {"metered-0", "metered-1"}
    for sample in by_replica.values():
        assert sample.value == 7.0
        assert sample.labels["service"] == "default/metered" and sample.labels["project"] == "default"
        assert sample.labels["exported_service"] == "theirs"
    up = {s.labels["replica"]: s.value for s in families["kgpu_runtime_metrics_up"].samples}
    assert up == {"metered-0": 1.0, "metered-1": 1.0}
    assert "kgpu_gateway_requests" in families  # kgpu's own series are still there
    # Prometheus reaches these series through the server; the replicas themselves are not its targets.
    targets = metered.http.get("/apis/kgpu.dev/v1alpha1/prometheus/targets").json()
    assert not [t for t in targets if t["labels"]["service"] == "default/metered"]
