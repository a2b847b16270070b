"""Prometheus metrics of the gateway (front door), on a registry of its own."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self._answered: dict[tuple[str, int], tuple[Counter, Histogram]] = {}
        self.requests = Counter(
            "kgpu_gateway_requests_total",
            "Requests answered by the gateway.",
            ["service", "code"],
            registry=r,
        )
        self.latency = Histogram(
            "kgpu_gateway_request_duration_seconds",
            "Time from the gateway receiving a request to answering it.",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "kgpu_gateway_retries_total",
            "Requests sent again to another replica, by why.",
            ["service", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "kgpu_gateway_rejected_total",
            "Requests the gateway answered 503 itself, by why.",
            ["service", "reason"],
            registry=r,
        )
        # Requests in flight per service are read at scrape time from the router's replica registry, which
        # counts them for routing anyway: nothing to update on every request.
        self.outstanding_by_service: Callable[[], dict[str, int]] = dict
        r.register(_InFlight(lambda: self.outstanding_by_service()))
        self.holding = Gauge(
            "kgpu_gateway_held_requests",
            "Requests waiting at the gateway for a ready replica.",
            ["service"],
            registry=r,
        )
        self.hold_seconds = Histogram(
            "kgpu_gateway_hold_duration_seconds",
            "Time requests waited at the gateway for a ready replica.",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ready_replicas = Gauge(
            "kgpu_service_ready_replicas", "Ready replicas per service.", ["service"], registry=r
        )
        self.desired_replicas = Gauge(
            "kgpu_service_desired_replicas", "Desired replicas per service.", ["service"], registry=r
        )
        self.replica_restarts = Counter(
            "kgpu_replica_restarts_total",
            "Replica processes restarted after they exited.",
            ["service", "replica"],
            registry=r,
        )

        self.cluster_available = Gauge(
            "kgpu_cluster_available",
            "1 while the cluster's backend answers (or has been silent less than the grace period), else 0.",
            ["cluster"],
            registry=r,
        )
        self.cluster_suspect = Gauge(
            "kgpu_cluster_suspect",
            "1 while the cluster is silent within its grace period (not routed to; replacements start "
            "elsewhere), else 0.",
            ["cluster"],
            registry=r,
        )
        self.cluster_transitions = Counter(
            "kgpu_cluster_transitions_total",
            "Times a cluster became suspect, unavailable, or healthy again (label to: the new state).",
            ["cluster", "to"],
            registry=r,
        )
        self.cluster_replicas = Gauge(
            "kgpu_service_cluster_replicas",
            "Replicas of a service with spec.placement asked of each cluster.",
            ["service", "cluster"],
            registry=r,
        )
        self.cluster_ready_replicas = Gauge(
            "kgpu_service_cluster_ready_replicas",
            "Ready replicas of a service with spec.placement in each cluster.",
            ["service", "cluster"],
            registry=r,
        )

    def forget_service(self, service: str) -> None:
        """A deleted service's replica gauges go (they describe what exists now); its request counts stay."""
        for gauge in (self.ready_replicas, self.desired_replicas):
            try:
                gauge.remove(service)
            except KeyError:  # never reported
                pass
        for gauge in (self.cluster_replicas, self.cluster_ready_replicas):
            for labels in [s.labels for m in gauge.collect() for s in m.samples]:
                if labels.get("service") == service:
                    try:
                        gauge.remove(service, labels["cluster"])
                    except KeyError:
                        pass

    def observe(self, service: str, status: int, seconds: float) -> None:
        # The labelled series of each (service, status) are looked up once: prometheus_client's
        # `labels` takes a lock and builds a key on every call, on the path of every request.
        series = self._answered.get((service, status))
        if series is None:
            series = (self.requests.labels(service, str(status)), self.latency.labels(service))
            self._answered[(service, status)] = series
        series[0].inc()
        series[1].observe(seconds)


class _InFlight:
    """kgpu_gateway_outstanding_requests, from a function giving requests in flight per service."""

    NAME = "kgpu_gateway_outstanding_requests"

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self.counts = counts

    def describe(self) -> list[GaugeMetricFamily]:
        return [self._family()]

    def collect(self) -> list[GaugeMetricFamily]:
        family = self._family()
        for service, count in sorted(self.counts().items()):
            family.add_metric([service], count)
        return [family]

    def _family(self) -> GaugeMetricFamily:
        return GaugeMetricFamily(
            self.NAME, "Requests sent to replicas and not yet answered.", labels=["service"]
        )
