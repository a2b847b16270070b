"""Prometheus metrics of one replica, in a registry of its own.

A per-app registry (instead of prometheus_client's global one) lets several apps live in one process,
as they do in tests and in the benchmark, without duplicate-metric errors or mixed counts.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from kgpu.serving.batcher import BatchStats

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048)
_BATCH_TOKEN_BUCKETS = (16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768, 65536)

CONTENT_TYPE = CONTENT_TYPE_LATEST


class ReplicaMetrics:
    """Every series carries `project`, `service`, `replica` and `node`, the labels the gateway's metrics
    (after Prometheus' relabeling) and the GPU exporter share, so queries can join them."""

    def __init__(
        self, service: str, replica: str, project: str | None = None, node: str | None = None
    ) -> None:
        self.registry = CollectorRegistry()
        # The service key is "<project>/<name>"; a bare name belongs to the default project.
        if project is None:
            project = service.split("/", 1)[0] if "/" in service else "default"
        self._base = {
            "project": project,
            "service": service,
            "replica": replica,
            "node": node or socket.gethostname(),
        }
        base_names = list(self._base)
        self.requests = Counter(
            "kgpu_requests",
            "Requests answered, by protocol and HTTP status code.",
            [*base_names, "protocol", "code"],
            registry=self.registry,
        )
        self.failures = Counter(
            "kgpu_request_failures",
            "Requests not answered with embeddings, by reason.",
            [*base_names, "reason"],
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "kgpu_request_duration_seconds",
            "Time from request received to response ready.",
            [*base_names, "protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_duration = Histogram(
            "kgpu_queue_duration_seconds",
            "Time a request waited before its first sequence was computed.",
            base_names,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_duration = Histogram(
            "kgpu_compute_duration_seconds",
            "Engine time per batch.",
            base_names,
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "kgpu_batch_size",
            "Sequences per engine batch.",
            base_names,
            buckets=_BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )
        self.batch_tokens = Histogram(
            "kgpu_batch_tokens",
            "Padded tokens (sequences x longest) per engine batch.",
            base_names,
            buckets=_BATCH_TOKEN_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "kgpu_queue_depth", "Requests waiting in the batcher queue.", base_names, registry=self.registry
        )
        self.inputs = Counter(
            "kgpu_inputs", "Inputs (texts or token sequences) embedded.", base_names, registry=self.registry
        )
        self.tokens = Counter(
            "kgpu_tokens", "Tokens embedded (after truncation).", base_names, registry=self.registry
        )

    @property
    def base_labels(self) -> dict[str, str]:
        """The labels every series of this replica carries (for series other modules add to the registry)."""
        return dict(self._base)

    def observe_request(self, protocol: str, code: int, seconds: float) -> None:
        self.requests.labels(**self._base, protocol=protocol, code=str(code)).inc()
        self.request_duration.labels(**self._base, protocol=protocol).observe(seconds)

    def count_failure(self, reason: str) -> None:
        self.failures.labels(**self._base, reason=reason).inc()

    def count_work(self, inputs: int, tokens: int) -> None:
        self.inputs.labels(**self._base).inc(inputs)
        self.tokens.labels(**self._base).inc(tokens)

    def observe_batch(self, stats: BatchStats) -> None:
        self.batch_size.labels(**self._base).observe(stats.size)
        self.batch_tokens.labels(**self._base).observe(stats.padded_tokens)
        self.compute_duration.labels(**self._base).observe(stats.compute_seconds)
        queue = self.queue_duration.labels(**self._base)
        for seconds in stats.queue_seconds:
            queue.observe(seconds)

    def track_queue_depth(self, read_depth: Callable[[], int]) -> None:
        # Read at scrape time: always current, and nothing to update on the hot path.
        self.queue_depth.labels(**self._base).set_function(read_depth)

    def render(self) -> bytes:
        return generate_latest(self.registry)
