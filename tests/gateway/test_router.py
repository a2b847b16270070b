"""Routing decisions of the gateway, with replicas simulated by a fake upstream.

Real replica processes are exercised in tests/e2e; here each "replica" is a
function of the request so that failures can be placed exactly.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from urllib.parse import urlsplit

import pytest

from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import ReplicaRegistry
from kgpu.gateway.router import Router, RouterSettings
from kgpu.gateway.upstream import ReplicaGone, UpstreamResponse

SERVICE = "default/minilm"


class Request:
    def __init__(self, url: str) -> None:
        self.port = urlsplit(url).port


class FakeUpstream:
    """Calls handler(request) -> UpstreamResponse (or raises ReplicaGone), sync or async."""

    def __init__(self, handler) -> None:
        self.handler = handler

    async def post(self, url: str, body: bytes, content_type: str, extra_headers=None) -> UpstreamResponse:
        result = self.handler(Request(url))
        return await result if inspect.isawaitable(result) else result

    async def close(self) -> None:
        pass


def make_router(handler, hold_timeout_s: float = 1.0) -> tuple[Router, ReplicaRegistry, GatewayMetrics]:
    registry = ReplicaRegistry()
    metrics = GatewayMetrics()
    settings = RouterSettings(hold_timeout_s=hold_timeout_s, max_attempts=4)
    router = Router(registry, metrics, settings, upstream=FakeUpstream(handler))
    return router, registry, metrics


def response(status: int, payload: dict, headers: dict | None = None) -> UpstreamResponse:
    return UpstreamResponse(
        status, {"content-type": "application/json", **(headers or {})}, json.dumps(payload).encode()
    )


def ok(request: Request) -> UpstreamResponse:
    return response(200, {"served_by": request.port})


async def test_picks_replica_with_fewest_outstanding_requests():
    router, registry, _ = make_router(ok)
    a = registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    registry.add(SERVICE, "minilm-1", "http://127.0.0.1:1002")
    a.outstanding = 3
    result = await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert result.status == 200
    assert json.loads(result.body)["served_by"] == 1002


async def test_retries_on_another_replica_when_one_dies_mid_request():
    def handler(request: Request) -> UpstreamResponse:
        if request.port == 1001:
            raise ReplicaGone("ServerDisconnectedError: Server disconnected")
        return ok(request)

    router, registry, metrics = make_router(handler)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    registry.add(SERVICE, "minilm-1", "http://127.0.0.1:1002")
    # Make the dying replica the first choice.
    registry.get(SERVICE, "minilm-1").outstanding = 1
    result = await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert result.status == 200
    assert result.replica == "minilm-1"
    retried = metrics.retries.labels(service=SERVICE, reason="replica_gone")._value.get()
    assert retried == 1


async def test_draining_replica_gets_no_new_requests():
    seen: list[int] = []

    def handler(request: Request) -> UpstreamResponse:
        seen.append(request.port)
        return ok(request)

    router, registry, _ = make_router(handler)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    registry.add(SERVICE, "minilm-1", "http://127.0.0.1:1002")
    registry.start_draining(SERVICE, "minilm-1")
    for _ in range(5):
        await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert seen == [1001] * 5


async def test_request_waits_for_a_replica_that_becomes_ready():
    router, registry, _ = make_router(ok, hold_timeout_s=5.0)

    async def replica_comes_up():
        await asyncio.sleep(0.2)
        registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")

    asyncio.get_running_loop().create_task(replica_comes_up())
    result = await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert result.status == 200


async def test_no_replica_within_hold_timeout_gives_503_with_retry_after():
    router, _, _ = make_router(ok, hold_timeout_s=0.2)
    result = await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert result.status == 503
    assert int(result.headers["retry-after"]) > 0
    assert "no ready replica" in json.loads(result.body)["error"]["message"]


async def test_busy_replica_429_tries_the_next_then_passes_overload_on():
    def handler(request: Request) -> UpstreamResponse:
        if request.port == 1001:
            return response(429, {"error": {"message": "queue full"}}, {"retry-after": "1"})
        return ok(request)

    router, registry, _ = make_router(handler)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    registry.add(SERVICE, "minilm-1", "http://127.0.0.1:1002")
    registry.get(SERVICE, "minilm-1").outstanding = 2
    result = await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert result.status == 200 and result.replica == "minilm-1"

    registry.remove(SERVICE, "minilm-1")
    result = await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert result.status == 429
    assert result.headers["retry-after"] == "1"


async def test_outstanding_counts_return_to_zero_after_failures():
    def handler(request: Request) -> UpstreamResponse:
        raise ReplicaGone("ClientConnectorError: connection refused")

    router, registry, _ = make_router(handler, hold_timeout_s=0.1)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    result = await router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json")
    assert result.status in (502, 503)
    assert registry.outstanding(SERVICE) == 0


@pytest.mark.parametrize("n", [2, 3])
async def test_load_spreads_across_replicas(n):
    gate = asyncio.Event()
    counts: dict[int, int] = {}

    async def handler(request: Request) -> UpstreamResponse:
        counts[request.port] = counts.get(request.port, 0) + 1
        await gate.wait()
        return ok(request)

    router, registry, _ = make_router(handler)
    for i in range(n):
        registry.add(SERVICE, f"minilm-{i}", f"http://127.0.0.1:{1001 + i}")
    tasks = [
        asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json")) for _ in range(6 * n)
    ]
    await asyncio.sleep(0.1)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert all(r.status == 200 for r in results)
    assert sorted(counts.values()) == [6] * n


async def test_hold_queue_is_bounded_and_overflow_gets_503_at_once():
    router, registry, metrics = make_router(ok, hold_timeout_s=5.0)
    router.settings.max_held_per_service = 3
    held = [asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json")) for _ in range(3)]
    await asyncio.sleep(0.05)
    started = asyncio.get_running_loop().time()
    overflow = await router.forward(SERVICE, "/x", b"{}", "application/json")
    assert overflow.status == 503 and int(overflow.headers["retry-after"]) > 0
    assert asyncio.get_running_loop().time() - started < 0.5  # answered, not held
    assert metrics.rejected.labels(service=SERVICE, reason="hold_queue_full")._value.get() == 1
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    assert [r.status for r in await asyncio.gather(*held)] == [200, 200, 200]


async def test_a_refused_service_gets_503_at_once_without_retry_after():
    """A service on a simulated cluster: no replica is asked, the request is not held, no retry is invited."""
    asked = []
    router, registry, metrics = make_router(lambda r: asked.append(r) or ok(r), hold_timeout_s=5.0)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:9001")  # even a routable endpoint is not used
    router.refuse = lambda service: "runs on a simulated cluster" if service == SERVICE else None
    result = await asyncio.wait_for(router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json"), 1.0)
    assert result.status == 503 and "retry-after" not in result.headers
    error = json.loads(result.body)["error"]
    assert error == {
        "message": "runs on a simulated cluster",
        "type": "service_unavailable",
        "param": None,
        "code": "service_simulated",
    }
    assert asked == [] and router.held(SERVICE) == 0
    rejected = metrics.rejected.labels(service=SERVICE, reason="simulated")._value.get()
    assert rejected == 1
    # Other services are routed as before.
    registry.add("default/other", "other-0", "http://127.0.0.1:9002")
    assert (await router.forward("default/other", "/v1/embeddings", b"{}", "application/json")).status == 200


def held_router(limit: int, hold_timeout_s: float = 5.0) -> tuple[Router, asyncio.Event]:
    """One replica with containerConcurrency ``limit`` whose answers wait for the returned event."""
    release = asyncio.Event()

    async def handler(request: Request) -> UpstreamResponse:
        await release.wait()
        return ok(request)

    router, registry, _ = make_router(handler, hold_timeout_s=hold_timeout_s)
    router.set_concurrency_limit(SERVICE, limit)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    return router, release


async def test_container_concurrency_holds_requests_at_the_gateway_until_a_slot_frees():
    """With containerConcurrency 2, a third request waits at the gateway, not on the replica."""
    gates: list[asyncio.Event] = []
    in_flight = []

    async def handler(request: Request) -> UpstreamResponse:
        gate = asyncio.Event()
        gates.append(gate)
        in_flight.append(1)
        await gate.wait()
        in_flight.pop()
        return ok(request)

    router, registry, _ = make_router(handler, hold_timeout_s=5.0)
    router.set_concurrency_limit(SERVICE, 2)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:1001")
    tasks = [asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json")) for _ in range(3)]
    await asyncio.sleep(0.05)
    assert len(in_flight) == 2 and router.held(SERVICE) == 1
    gates[0].set()
    await asyncio.sleep(0.05)
    assert len(in_flight) == 2 and router.held(SERVICE) == 0  # the waiting one took the freed slot
    for gate in gates:
        gate.set()
    assert [r.status for r in await asyncio.gather(*tasks)] == [200, 200, 200]


async def test_waiting_requests_get_free_slots_earliest_deadline_first():
    order: list[str] = []
    router, release = held_router(limit=1)

    async def send(name: str, deadline_ms: float | None) -> None:
        result = await router.forward(SERVICE, "/x", b"{}", "application/json", deadline_ms)
        assert result.status == 200
        order.append(name)

    first = asyncio.create_task(send("first", None))
    await asyncio.sleep(0.02)
    # Queued in this order; served by deadline: no header counts as the hold timeout (5 s).
    waiting = [
        asyncio.create_task(send("no-deadline", None)),
        asyncio.create_task(send("3s", 3000)),
        asyncio.create_task(send("1s", 1000)),
    ]
    await asyncio.sleep(0.02)
    assert router.held(SERVICE) == 3
    release.set()
    await asyncio.gather(first, *waiting)
    assert order == ["first", "1s", "3s", "no-deadline"]


async def test_a_new_request_does_not_overtake_requests_already_waiting():
    order: list[str] = []
    router, release = held_router(limit=1)

    async def send(name: str) -> None:
        await router.forward(SERVICE, "/x", b"{}", "application/json")
        order.append(name)

    tasks = [asyncio.create_task(send("a"))]
    await asyncio.sleep(0.02)
    tasks.append(asyncio.create_task(send("b")))
    await asyncio.sleep(0.02)
    release.set()  # "a" finishes and hands its slot to "b"; "c" arrives right then
    tasks.append(asyncio.create_task(send("c")))
    await asyncio.gather(*tasks)
    assert order == ["a", "b", "c"]


async def test_requests_waiting_for_a_slot_get_503_after_the_hold_timeout():
    router, release = held_router(limit=1, hold_timeout_s=0.2)
    busy = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json"))
    await asyncio.sleep(0.02)
    waited = await router.forward(SERVICE, "/x", b"{}", "application/json")
    assert waited.status == 503 and int(waited.headers["retry-after"]) > 0
    assert router.held(SERVICE) == 0
    release.set()
    assert (await busy).status == 200


async def test_a_cancelled_waiter_passes_its_turn_on():
    router, release = held_router(limit=1)
    busy = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json"))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json", 100))
    kept = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json", 4000))
    await asyncio.sleep(0.02)
    gone.cancel()  # the client went away while waiting
    release.set()
    assert (await asyncio.wait_for(kept, 2.0)).status == 200
    assert (await busy).status == 200
    assert router.held(SERVICE) == 0


async def test_a_deleted_service_leaves_no_state_behind_at_the_gateway():
    """Wait queues, turn counts and endpoint entries go once unused: services come and go for days."""
    router, release = held_router(limit=1, hold_timeout_s=0.3)
    registry = router.registry
    busy = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json"))
    await asyncio.sleep(0.02)
    served = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json", 200))
    gone = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json", 100))
    last = asyncio.create_task(router.forward(SERVICE, "/x", b"{}", "application/json", 5000))
    await asyncio.sleep(0.02)
    gone.cancel()
    await asyncio.sleep(0.02)
    release.set()  # "busy" ends, "served" takes the slot; its answer is instant now
    assert (await busy).status == 200 and (await served).status == 200
    assert (await last).status == 200
    registry.remove(SERVICE, "minilm-0")
    assert SERVICE not in router._waiting and SERVICE not in router._granted
    assert SERVICE not in registry._services
    # A service nobody has seen gets no entry from being looked at either.
    assert registry.pick("default/never") is None and registry.free_slots("default/never") == 0
    assert registry.endpoints("default/never") == [] and "default/never" not in registry._services
    # The service works again when a replica comes back.
    registry.add(SERVICE, "minilm-1", "http://127.0.0.1:1002")
    assert (await router.forward(SERVICE, "/x", b"{}", "application/json")).status == 200


def test_a_service_speaking_one_protocol_refuses_the_other_by_name():
    router = Router(ReplicaRegistry(), GatewayMetrics())
    assert router.protocol_refusal("default/qwen", "v2") is None  # kgpu's replica speaks both
    router.set_protocol("default/qwen", "openai")
    assert router.protocol_refusal("default/qwen", "openai") is None
    assert "speaks only the OpenAI API" in router.protocol_refusal("default/qwen", "v2")
    router.set_protocol("default/qwen", None)
    assert router.protocol_refusal("default/qwen", "v2") is None


async def test_requests_in_flight_are_the_gateways_outstanding_metric_when_scraped():
    release = asyncio.Event()

    async def slow(request: Request) -> UpstreamResponse:
        await release.wait()
        return ok(request)

    router, registry, metrics = make_router(slow)
    registry.add(SERVICE, "minilm-0", "http://127.0.0.1:9001")

    def in_flight() -> float | None:
        return metrics.registry.get_sample_value("kgpu_gateway_outstanding_requests", {"service": SERVICE})

    assert in_flight() == 0
    forwards = [
        asyncio.ensure_future(router.forward(SERVICE, "/v1/embeddings", b"{}", "application/json"))
        for _ in range(3)
    ]
    await asyncio.sleep(0.01)
    assert in_flight() == 3
    release.set()
    assert [r.status for r in await asyncio.gather(*forwards)] == [200] * 3
    assert in_flight() == 0
