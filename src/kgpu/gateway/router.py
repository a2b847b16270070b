"""Forward one request to a ready replica, retrying elsewhere when that replica dies.

Embedding and inference requests have no side effects, so sending the same body to
another replica after a connection failure is safe: the client sees one answer.

The activator's part: when a service has no ready replica, or every ready replica already
has the service's ``containerConcurrency`` requests in flight, a request waits in the
service's bounded queue until a replica (or a slot on one) frees up. Waiting requests get
their turn earliest deadline first, late ones last (``deadline_queue``); a client states its
deadline with the ``X-Kgpu-Deadline-Ms`` header (milliseconds from arrival), and without one
its deadline is the hold timeout, so such requests go in arrival order. Past the queue's
bound or the hold timeout a request gets 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from kgpu.gateway.deadline_queue import DeadlineQueue
from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import Endpoint, ReplicaRegistry
from kgpu.gateway.streaming import pass_on
from kgpu.gateway.upstream import GatewayUpstream, ReplicaGone, Upstream

log = logging.getLogger("kgpu.gateway")


@dataclass
class ProxyResult:
    status: int
    body: bytes  # the whole answer; for a stream, its first chunk
    headers: dict[str, str]
    replica: str | None = None
    stream: AsyncIterator[bytes] | None = None  # the rest of a streamed answer, passed on as it comes


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
        self.upstream = upstream or GatewayUpstream(self.settings.upstream_timeout_s)
        self._waiting: dict[str, DeadlineQueue[asyncio.Future[None]]] = {}
        # Waiters given a turn that have not resumed yet: new arrivals queue behind them.
        self._granted: dict[str, int] = {}
        self._limits: dict[str, int] = {}  # service -> containerConcurrency (0: no limit)
        # service -> the `model` its replicas answer to, where that is not the service's name.
        self._upstream_models: dict[str, str] = {}
        # service -> the one protocol its replicas speak ("openai" or "v2"); absent: both (kgpu's own).
        self._protocols: dict[str, str] = {}
        # Services with `replicas: 0` and no autoscaling: nothing will start a replica, so a
        # request is answered 503 at once instead of being held until its timeout.
        self._parked: set[str] = set()
        registry.on_change = self._admit
        metrics.outstanding_by_service = registry.outstanding_by_service
        # Called with the service key whenever a request has to wait for a replica (wakes a service at zero).
        self.on_hold: Callable[[str], None] | None = None
        # Called with the service key first: a message means no replica of it can ever serve (a service
        # on a simulated cluster); the request gets 503 with that message and no Retry-After.
        self.refuse: Callable[[str], str | None] | None = None
        # Called with an endpoint that could not be reached or dropped a request before its first byte
        # (the control plane then asks that endpoint's cluster for a heartbeat at once).
        self.on_replica_gone: Callable[[Endpoint], None] | None = None

    def held(self, service: str) -> int:
        """Requests of the service waiting at the gateway for a ready replica or a free slot on one."""
        # Queued, or given a turn not yet taken: exactly the requests inside _wait_turn.
        return len(self._waiting.get(service, ())) + self._granted.get(service, 0)

    def set_concurrency_limit(self, service: str, limit: int) -> None:
        """At most ``limit`` requests in flight per replica of the service (0: no limit)."""
        if self._limits.get(service, 0) != limit:
            self._limits[service] = limit
            self._admit(service)

    def set_upstream_model(self, service: str, model: str | None) -> None:
        """The `model` the service's replicas answer to (None: the service's plain name)."""
        if model is None:
            self._upstream_models.pop(service, None)
        else:
            self._upstream_models[service] = model

    def set_protocol(self, service: str, protocol: str | None) -> None:
        """The one protocol the service's replicas speak (None: OpenAI and v2 both, kgpu's replica)."""
        if protocol is None:
            self._protocols.pop(service, None)
        else:
            self._protocols[service] = protocol

    def protocol_refusal(self, service: str, protocol: str) -> str | None:
        """Why a request of `protocol` cannot go to the service's replicas, or None when it can."""
        speaks = self._protocols.get(service)
        if speaks is None or speaks == protocol:
            return None
        names = {"openai": "the OpenAI API (/v1/...)", "v2": "the Open Inference Protocol v2 (/v2/...)"}
        return f"service {service!r} runs a server that speaks only {names.get(speaks, speaks)}"

    def upstream_model(self, service: str) -> str:
        """What a forwarded request names as its model: "team-a/minilm" is "minilm" to its replicas."""
        return self._upstream_models.get(service) or service.split("/", 1)[1]

    def set_parked(self, service: str, parked: bool) -> None:
        """Whether the service is scaled to zero with nothing to scale it up (see `_parked`)."""
        if parked:
            self._parked.add(service)
        else:
            self._parked.discard(service)

    def _pick(self, service: str, exclude_urls: set[str]) -> Endpoint | None:
        return self.registry.pick(service, exclude_urls, limit=self._limits.get(service, 0))

    def _admit(self, service: str) -> None:
        """Give waiting requests their turn while the service has free slots, best deadline first."""
        queue = self._waiting.get(service)
        if not queue:
            return
        # A turn given but not yet taken holds its slot.
        free = self.registry.free_slots(service, self._limits.get(service, 0)) - self._granted.get(service, 0)
        now = time.monotonic()
        while queue and free > 0:
            # Only live waiters are queued: a waiter that times out or is cancelled leaves first.
            queue.pop(now).set_result(None)
            self._granted[service] = self._granted.get(service, 0) + 1
            free -= 1

    async def _wait_turn(self, service: str, arrival: float, deadline: float, timeout: float) -> bool:
        """Wait in the service's queue; True when given a turn, False after ``timeout``."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._waiting.setdefault(service, DeadlineQueue())
        handle = queue.push(waiter, arrival, deadline)
        self._admit(service)  # a slot may have freed between the pick and now
        try:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), timeout)
            except asyncio.TimeoutError:
                pass
            except BaseException:  # cancelled (client gone): leave, and pass on a turn given meanwhile
                if not queue.discard(handle):
                    self._take_turn(service)
                    self._admit(service)
                raise
            if queue.discard(handle):  # still queued: the wait timed out
                return False
            self._take_turn(service)
            return True
        finally:
            self._forget_if_idle(service)

    def _take_turn(self, service: str) -> None:
        """A turn given to a waiter is taken (or given up): it no longer holds a slot."""
        left = self._granted[service] - 1
        if left:
            self._granted[service] = left
        else:
            del self._granted[service]

    def _forget_if_idle(self, service: str) -> None:
        """Drop the service's wait queue once nobody waits: deleted services leave nothing behind."""
        queue = self._waiting.get(service)
        if queue is not None and not queue:
            del self._waiting[service]

    async def close(self) -> None:
        await self.upstream.close()

    async def forward(
        self,
        service: str,
        path: str,
        body: bytes,
        content_type: str,
        deadline_ms: float | None = None,
        *,
        stream: bool = False,
        prompt_tokens: int = 0,
        max_tokens: int = 0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ProxyResult:
        """``deadline_ms``: the client's deadline, milliseconds from now (orders the wait queue).

        ``stream``: the answer is a stream of server-sent events, passed on as it comes (``ProxyResult.stream``);
        a replica is replaced only until the stream's first byte, which is read before this returns.
        ``prompt_tokens`` and ``max_tokens``: a generation request's work in tokens, weighed by routing.
        """
        started = time.perf_counter()
        work = prompt_tokens + max_tokens
        result = await self._forward(
            service, path, body, content_type, deadline_ms, stream, work, max_tokens, extra_headers
        )
        self.metrics.observe(service, result.status, time.perf_counter() - started)
        return result

    async def read(self, service: str, path: str) -> ProxyResult:
        """A GET answered by one ready replica (v2 model metadata); 503 when none is ready."""
        endpoint = self._pick(service, set())
        if endpoint is None:
            return _unavailable(service)
        try:
            response = await self.upstream.get(endpoint.url + path)
        except ReplicaGone as exc:
            return _error(502, f"service {service!r}: replica {endpoint.replica} failed: {exc}")
        return ProxyResult(response.status, response.body, response.headers, endpoint.replica)

    def _claim(self, endpoint: Endpoint, work: int) -> None:
        endpoint.outstanding += 1
        endpoint.work += work

    def _release(self, endpoint: Endpoint, work: int) -> None:
        endpoint.outstanding -= 1
        endpoint.work -= work
        self._admit(endpoint.service)  # a slot freed up

    def _streamed(
        self, endpoint: Endpoint, work: int, generate: int, first: bytes, rest: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """The rest of a stream; the replica's slot and work are held until it ends. Each event passed is
        about one token generated, so the work still to do shrinks with it."""
        left = {"work": work, "generate": generate}

        def on_events(count: int) -> None:
            done = min(count, left["generate"])
            left["generate"] -= done
            left["work"] -= done
            endpoint.work -= done

        on_events(first.count(b"\n\n"))
        return pass_on(rest, endpoint.replica, on_events, lambda: self._release(endpoint, left["work"]))

    async def _forward(
        self,
        service: str,
        path: str,
        body: bytes,
        content_type: str,
        deadline_ms: float | None,
        stream: bool = False,
        work: int = 0,
        generate: int = 0,
        extra_headers: Mapping[str, str] | None = None,
    ) -> ProxyResult:
        refusal = self.refuse(service) if self.refuse is not None else None
        if refusal is not None:
            self.metrics.rejected.labels(service=service, reason="simulated").inc()
            return _error(503, refusal, code="service_simulated")
        if service in self._parked:
            self.metrics.rejected.labels(service=service, reason="scaled_to_zero").inc()
            return _error(
                503,
                f"service {service!r} has replicas: 0 and no autoscaling, so no replica will start "
                "(retrying will not help); set spec.replicas or spec.autoscaling to serve it",
                code="service_scaled_to_zero",
            )
        arrival = time.monotonic()
        hold_until = arrival + self.settings.hold_timeout_s
        client_deadline = hold_until if deadline_ms is None else arrival + deadline_ms / 1000.0
        failed_urls: set[str] = set()
        busy_urls: set[str] = set()
        last_busy: ProxyResult | None = None
        attempts = 0
        my_turn = False  # given a turn by the queue: may take a slot although others wait
        while True:
            queued_ahead = bool(self._waiting.get(service)) or self._granted.get(service, 0) > 0
            endpoint = None if queued_ahead and not my_turn else self._pick(service, failed_urls | busy_urls)
            if endpoint is None and my_turn:
                # The turn found no replica this request may use (all it may try said busy or
                # failed): back off a moment so it does not take every turn it passes on.
                await asyncio.sleep(0.05)
            my_turn = False
            if endpoint is None:
                if last_busy is not None:
                    return last_busy  # every replica said 429: pass the overload on
                remaining = hold_until - time.monotonic()
                if remaining <= 0:
                    return _unavailable(service)
                held = self.held(service)
                if held >= self.settings.max_held_per_service:
                    self.metrics.rejected.labels(service=service, reason="hold_queue_full").inc()
                    return _error(
                        503,
                        f"service {service!r} has {held} requests waiting for a replica; retry later",
                        retry_after=5,
                    )
                waited = time.monotonic()
                if self.on_hold is not None:
                    self.on_hold(service)
                self.metrics.holding.labels(service=service).inc()
                try:
                    my_turn = await self._wait_turn(service, arrival, client_deadline, remaining)
                finally:
                    self.metrics.holding.labels(service=service).dec()
                self.metrics.hold_seconds.labels(service=service).observe(time.monotonic() - waited)
                continue

            attempts += 1
            self._claim(endpoint, work)
            send = self.upstream.post_streaming if stream else self.upstream.post
            try:
                response = await send(endpoint.url + path, body, content_type, extra_headers)
            except ReplicaGone as exc:
                self._release(endpoint, work)
                log.warning("replica %s failed mid-request (%s); retrying elsewhere", endpoint.replica, exc)
                if self.on_replica_gone is not None:
                    self.on_replica_gone(endpoint)
                self.metrics.retries.labels(service=service, reason="replica_gone").inc()
                failed_urls.add(endpoint.url)
                if attempts >= self.settings.max_attempts:
                    return _error(502, f"service {service!r}: {attempts} replicas failed this request")
                continue
            if response.rest is not None:
                endpoint.served += 1
                rest = self._streamed(endpoint, work, generate, response.body, response.rest)
                return ProxyResult(response.status, response.body, response.headers, endpoint.replica, rest)
            self._release(endpoint, work)

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
