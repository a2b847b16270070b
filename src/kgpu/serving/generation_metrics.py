"""Prometheus series of a generation replica, beside the request counts every replica has (ReplicaMetrics).

Names are what dashboards, `kgpu top` and the autoscaler read: time to first token and the gap between tokens
as histograms, prompt and generated tokens as counters, and the engine's load (running and waiting sequences,
the share of the KV cache in use) as gauges read at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram

from kgpu.serving.metrics import ReplicaMetrics

TTFT = "kgpu_generation_time_to_first_token_seconds"
INTER_TOKEN = "kgpu_generation_inter_token_seconds"
PROMPT_TOKENS = "kgpu_generation_prompt_tokens"  # exported with the counter's _total suffix
GENERATED_TOKENS = "kgpu_generation_generated_tokens"
RUNNING = "kgpu_generation_running_sequences"
WAITING = "kgpu_generation_waiting_sequences"
KV_USAGE = "kgpu_generation_kv_cache_usage_ratio"

_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_INTER_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5)


class GenerationMetrics:
    def __init__(self, replica: ReplicaMetrics) -> None:
        labels = replica.base_labels
        names = list(labels)
        registry = replica.registry
        self._labels = labels
        self.ttft = Histogram(
            TTFT, "Time from request received to its first generated token.", names,
            buckets=_TTFT_BUCKETS, registry=registry,
        )  # fmt: skip
        self.inter_token = Histogram(
            INTER_TOKEN, "Time between consecutive pieces of one answer.", names,
            buckets=_INTER_TOKEN_BUCKETS, registry=registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(PROMPT_TOKENS, "Prompt tokens admitted.", names, registry=registry)
        self.generated_tokens = Counter(GENERATED_TOKENS, "Tokens generated.", names, registry=registry)
        self.running = Gauge(RUNNING, "Sequences in the running batch.", names, registry=registry)
        self.waiting = Gauge(
            WAITING, "Sequences waiting to join the running batch.", names, registry=registry
        )
        self.kv_usage = Gauge(
            KV_USAGE, "Share of the paged KV cache in use (0 to 1).", names, registry=registry
        )

    def track_engine(
        self, running: Callable[[], float], waiting: Callable[[], float], kv_usage: Callable[[], float]
    ) -> None:
        self.running.labels(**self._labels).set_function(running)
        self.waiting.labels(**self._labels).set_function(waiting)
        self.kv_usage.labels(**self._labels).set_function(kv_usage)

    def observe_piece(self, previous: float, now: float, first: bool) -> None:
        """A piece of an answer arrived at `now`; `previous` is the request's arrival or its last piece."""
        (self.ttft if first else self.inter_token).labels(**self._labels).observe(now - previous)

    def count_tokens(self, prompt_tokens: int, generated: int) -> None:
        self.prompt_tokens.labels(**self._labels).inc(prompt_tokens)
        self.generated_tokens.labels(**self._labels).inc(generated)
