"""A deleted service's replica gauges leave /metrics; they describe what exists now."""

from prometheus_client import generate_latest

from kgpu.gateway.metrics import GatewayMetrics


def test_forgetting_a_service_removes_its_replica_gauges_and_keeps_other_services() -> None:
    metrics = GatewayMetrics()
    for service in ("default/chat", "default/minilm"):
        metrics.ready_replicas.labels(service=service).set(1)
        metrics.desired_replicas.labels(service=service).set(2)
    metrics.forget_service("default/chat")
    metrics.forget_service("default/never-reported")  # no error for a service never reported
    text = generate_latest(metrics.registry).decode()
    assert 'service="default/chat"' not in text
    assert 'kgpu_service_ready_replicas{service="default/minilm"} 1.0' in text
