"""Forward one request to a ready replica, retrying elsewhere when that replica dies.

Embedding and inference requests have no side effects, so sending the same body to
another replica after a connection failure is safe: the client sees one answer.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import ReplicaRegistry
from kgpu.gateway.upstream import AiohttpUpstream, ReplicaGone, Upstream

log = logging.getLogger("kgpu.gateway")


@dataclass
class ProxyResult:
    status: int
    body: bytes
    headers: dict[str, str]
    replica: str | None = None


@dataclass
class RouterSettings:
    # How long a request may wait for a ready replica (service starting, replica restarting).
    hold_timeout_s: float = 120.0
    # How many requests of one service may wait at the gateway at once; more get 503 + Retry-After
    # straight away instead of piling up (overload must answer, not hang).
    max_held_per_service: int = 2048
    # How many replicas one request may try before the gateway gives up.
    max_attempts: int = 4
    # Per-request timeout towards a replica; large batches on CPU can take seconds.
    upstream_timeout_s: float = 300.0


class Router:
    def __init__(
        self,
        registry: ReplicaRegistry,
        metrics: GatewayMetrics,
        settings: RouterSettings | None = None,
        upstream: Upstream | None = None,
    ) -> None:
        self.registry = registry
        self.metrics = metrics
        self.settings = settings or RouterSettings()
        self.upstream = upstream or AiohttpUpstream(self.settings.upstream_timeout_s)
        self._held: dict[str, int] = {}
        # Called with the service key whenever a request has to wait for a replica (wakes a service at zero).
        self.on_hold: Callable[[str], None] | None = None
        # Called with the service key first: a message means no replica of it can ever serve (a service
        # on a simulated cluster); the request gets 503 with that message and no Retry-After.
        self.refuse: Callable[[str], str | None] | None = None

    def held(self, service: str) -> int:
        """Requests of the service waiting at the gateway for a ready replica."""
        return self._held.get(service, 0)

    async def close(self) -> None:
        await self.upstream.close()

    async def forward(self, service: str, path: str, body: bytes, content_type: str) -> ProxyResult:
        started = time.perf_counter()
        result = await self._forward(service, path, body, content_type)
        self.metrics.observe(service, result.status, time.perf_counter() - started)
        return result

    async def _forward(self, service: str, path: str, body: bytes, content_type: str) -> ProxyResult:
        refusal = self.refuse(service) if self.refuse is not None else None
        if refusal is not None:
            self.metrics.rejected.labels(service=service, reason="simulated").inc()
            return _error(503, refusal, code="service_simulated")
        deadline = time.monotonic() + self.settings.hold_timeout_s
        failed_urls: set[str] = set()
        busy_urls: set[str] = set()
        last_busy: ProxyResult | None = None
        attempts = 0
        while True:
            endpoint = self.registry.pick(service, exclude_urls=failed_urls | busy_urls)
            if endpoint is None:
                if last_busy is not None:
                    return last_busy  # every replica said 429: pass the overload on
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return _unavailable(service)
                if self._held.get(service, 0) >= self.settings.max_held_per_service:
                    self.metrics.rejected.labels(service=service, reason="hold_queue_full").inc()
                    return _error(
                        503,
                        f"service {service!r} has {self._held[service]} requests waiting for a replica; retry later",
                        retry_after=5,
                    )
                waited = time.monotonic()
                if self.on_hold is not None:
                    self.on_hold(service)
                self._held[service] = self._held.get(service, 0) + 1
                self.metrics.holding.labels(service=service).inc()
                try:
                    await self.registry.wait_for_change(service, min(remaining, 1.0))
                finally:
                    self._held[service] -= 1
                    self.metrics.holding.labels(service=service).dec()
                self.metrics.hold_seconds.labels(service=service).observe(time.monotonic() - waited)
                continue

            attempts += 1
            endpoint.outstanding += 1
            self.metrics.outstanding.labels(service=service).inc()
            try:
                response = await self.upstream.post(endpoint.url + path, body, content_type)
            except ReplicaGone as exc:
                log.warning("replica %s failed mid-request (%s); retrying elsewhere", endpoint.replica, exc)
                self.metrics.retries.labels(service=service, reason="replica_gone").inc()
                failed_urls.add(endpoint.url)
                if attempts >= self.settings.max_attempts:
                    return _error(502, f"service {service!r}: {attempts} replicas failed this request")
                continue
            finally:
                endpoint.outstanding -= 1
                self.metrics.outstanding.labels(service=service).dec()

            if response.status == 503 and attempts < self.settings.max_attempts:
                # A replica that is draining or restarting answers 503: try a live one.
                self.metrics.retries.labels(service=service, reason="replica_unready").inc()
                failed_urls.add(endpoint.url)
                continue
            result = ProxyResult(response.status, response.body, response.headers, endpoint.replica)
            if response.status == 429:
                self.metrics.retries.labels(service=service, reason="replica_busy").inc()
                busy_urls.add(endpoint.url)
                last_busy = result
                continue
            endpoint.served += 1
            return result


def _error(
    status: int, message: str, retry_after: int | None = None, code: int | str | None = None
) -> ProxyResult:
    headers = {"content-type": "application/json"}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    error = {"message": message, "type": "service_unavailable", "param": None, "code": code or status}
    body = json.dumps({"error": error}).encode()
    return ProxyResult(status=status, body=body, headers=headers)


def _unavailable(service: str) -> ProxyResult:
    return _error(503, f"service {service!r} has no ready replica yet; retry later", retry_after=5)
