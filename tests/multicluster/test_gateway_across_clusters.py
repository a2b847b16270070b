"""One endpoint for a service in several clusters: the gateway's routing, retries and activator.

The router and its upstream are the real ones, over loopback sockets; each "replica" is a small
HTTP server that answers like a replica (JSON after a short compute time) and, when its cluster is
lost, drops every connection the way an unreachable cluster looks from the gateway.
"""

from __future__ import annotations

import asyncio

from kgpu.gateway.metrics import GatewayMetrics
from kgpu.gateway.registry import ReplicaRegistry
from kgpu.gateway.router import Router, RouterSettings

SVC = "default/svc"
HERE, CLOUD = "default/here", "default/cloud"


def test_the_local_cluster_is_preferred_while_remote_replicas_take_load_when_it_is_busier():
    registry = ReplicaRegistry()
    local = registry.add(SVC, "svc-0", "http://127.0.0.1:1", cluster=HERE, local=True)
    remote = registry.add(SVC, "svc-1", "http://127.0.0.1:2", cluster=CLOUD, local=False)
    assert registry.pick(SVC) is local  # both idle: no hop between clusters
    local.outstanding = 1
    assert registry.pick(SVC) is local  # the remote one counts one busier: a tie goes local
    local.outstanding = 2
    assert registry.pick(SVC) is remote


def test_a_lost_cluster_gets_no_new_request_at_once_and_takes_requests_again_when_back():
    registry = ReplicaRegistry()
    changed: list[str] = []
    registry.on_change = changed.append
    registry.add(SVC, "svc-0", "http://127.0.0.1:1", cluster=HERE)
    remote = registry.add(SVC, "svc-1", "http://127.0.0.1:2", cluster=CLOUD, local=False)
    registry.get(SVC, "svc-0").outstanding = 5
    changed.clear()
    registry.set_cluster_available(CLOUD, False)
    assert changed == [SVC]  # waiters re-checked at once
    assert registry.pick(SVC).cluster == HERE
    assert registry.routable_count(SVC) == 1 and registry.free_slots(SVC, limit=5) == 0
    registry.set_cluster_available(CLOUD, True)
    assert registry.pick(SVC) is remote and registry.routable_count(SVC) == 2


class Replica:
    """A replica's HTTP server on loopback; `lose()` drops its connections and refuses new ones."""

    def __init__(self, compute_s: float = 0.01) -> None:
        self.compute_s = compute_s
        self.served = 0
        self.lost = False
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self.lost:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(h.split(b":")[1])
                        for h in head.split(b"\r\n")
                        if h.lower().startswith(b"content-length")
                    ),
                    0,
                )
                await reader.readexactly(length)
                await asyncio.sleep(self.compute_s)
                if self.lost:
                    break
                body = b'{"data": [{"embedding": [0.0]}]}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                    + str(len(body)).encode()
                    + b"\r\n\r\n"
                    + body
                )
                await writer.drain()
                self.served += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()

    def lose(self) -> None:
        self.lost = True
        self.server.close()
        for writer in list(self._writers):
            writer.transport.abort()  # in-flight requests see the connection drop before any byte


async def test_a_cluster_lost_under_load_loses_no_request_that_could_be_retried():
    registry, metrics = ReplicaRegistry(), GatewayMetrics()
    router = Router(registry, metrics, RouterSettings(hold_timeout_s=5.0, max_attempts=4))
    here = [Replica(), Replica()]
    cloud = [Replica(), Replica()]
    for i, replica in enumerate(here):
        registry.add(SVC, f"svc-{i}", await replica.start(), cluster=HERE)
    for i, replica in enumerate(cloud, start=2):
        registry.add(SVC, f"svc-{i}", await replica.start(), cluster=CLOUD, local=False)

    total, concurrency = 400, 16
    statuses: list[int] = []
    sent = 0

    async def client() -> None:
        nonlocal sent
        while sent < total:
            sent += 1
            result = await router.forward(SVC, "/v1/embeddings", b'{"input": "x"}', "application/json")
            statuses.append(result.status)

    async def lose_cloud_mid_load() -> None:
        while len(statuses) < total // 4:
            await asyncio.sleep(0.005)
        assert sum(r.served for r in cloud) > 0  # the remote cluster was taking load
        for replica in cloud:
            replica.lose()  # requests in flight there fail; the gateway retries them here
        await asyncio.sleep(0.2)  # the grace period: the cluster is silent but not yet marked lost
        registry.set_cluster_available(CLOUD, False)

    try:
        await asyncio.gather(lose_cloud_mid_load(), *(client() for _ in range(concurrency)))
    finally:
        await router.close()
        for replica in here + cloud:
            replica.server.close()

    assert len(statuses) == total
    assert statuses.count(200) == total  # nothing lost: every failed attempt was retried in the other cluster
    retried = metrics.registry.get_sample_value(
        "kgpu_gateway_retries_total", {"service": SVC, "reason": "replica_gone"}
    )
    assert retried and retried >= 1
    assert sum(r.served for r in here) + sum(r.served for r in cloud) == total


async def test_a_request_held_at_zero_is_served_by_the_first_replica_in_any_cluster():
    registry, metrics = ReplicaRegistry(), GatewayMetrics()
    router = Router(registry, metrics, RouterSettings(hold_timeout_s=5.0))
    woken: list[str] = []
    router.on_hold = woken.append  # the activator: a held request wakes the autoscaler
    remote = Replica()
    url = await remote.start()
    try:
        pending = asyncio.create_task(router.forward(SVC, "/v1/embeddings", b"{}", "application/json"))
        await asyncio.sleep(0.05)
        assert woken == [SVC] and router.held(SVC) == 1
        registry.add(SVC, "svc-0", url, cluster=CLOUD, local=False)  # the first replica is remote
        result = await asyncio.wait_for(pending, 5.0)
    finally:
        await router.close()
        remote.server.close()
    assert result.status == 200 and remote.served == 1
