"""Services on a `sim` cluster: replicas placed on virtual nodes, never started on this machine.

Runs the real server (API, reconciler, sim-node loop, gateway) with the real local backend, so a
sim service routed to it would start processes here; the cluster's autoscaler flags make every
delay short (seconds, not the defaults' minutes).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kgpu.backends.sim.nodes import SimNodes
from kgpu.cli import client as cli_client
from kgpu.cli.main import app as cli_app
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from kgpu.gateway.router import RouterSettings
from tests.controlplane.test_api import cpu_node
from tests.controlplane.test_simnodes import _client_for, cluster, gpu_service, pool

API = "/apis/kgpu.dev/v1alpha1/namespaces/default"
JOIN_S = 1.5
START_S = 0.3
UNNEEDED_S = 1.0


def wait_for(what: str, check: Callable[[], object], timeout_s: float = 15.0) -> object:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def body(resource) -> dict:
    return resource.model_dump(by_alias=True, mode="json", exclude_none=True)


@pytest.fixture
def server(tmp_path, database_url):
    """The server on SQLite and on PostgreSQL (conftest.py): resources, tokens and virtual nodes."""
    config = PlatformConfig(
        state_dir=tmp_path,
        database_url=database_url,
        reconcile_interval_s=0.05,
        autoscale_interval_s=0.05,
        router=RouterSettings(hold_timeout_s=0.3),
    )
    platform = Platform(config, inventory=cpu_node())  # the real local backend: it would start processes
    with TestClient(create_server_app(platform)) as api:
        yield api, platform


def test_sim_service_fills_a_node_grows_the_pool_and_shrinks_it_again(server, monkeypatch):
    api, platform = server
    flags = {
        "node-join-delay": f"{JOIN_S}s",
        "replica-start-delay": f"{START_S}s",
        "scale-down-unneeded-time": f"{UNNEEDED_S}s",
        "scale-down-delay-after-add": "0s",
    }
    assert api.put(f"{API}/clusters/lab", json=body(cluster(**flags))).status_code == 201
    h100 = body(pool(min_nodes=1, max_nodes=3))
    assert api.put(f"{API}/nodepools/h100", json=h100).status_code == 201

    def pool_status() -> dict:
        return api.get(f"{API}/nodepools/h100").json()["status"]

    wait_for("node 0 to join", lambda: pool_status().get("readyNodes") == 1)
    service = body(gpu_service("llm", replicas=12, gpus=1))
    assert api.put(f"{API}/inferenceservices/llm", json=service).status_code == 201

    def status() -> dict:
        return api.get(f"{API}/inferenceservices/llm").json()["status"]

    # Node 0 takes 8 one-GPU replicas; 4 stay Pending, naming the GPU they lack, while node 1 joins.
    first = wait_for("8 ready, 4 pending", lambda: (s := status())["readyReplicas"] == 8 and s)
    assert (first["phase"], first["replicas"], first["pendingReplicas"]) == ("Pending", 12, 4)
    assert first["simulated"] is True and first["nodes"] == {"h100-0": 8}
    pending = [r for r in first["replicaStatuses"] if r["phase"] == "Pending"]
    assert [r["name"] for r in pending] == ["llm-8", "llm-9", "llm-10", "llm-11"]
    assert all(r["node"] == "" for r in pending)
    assert "Insufficient nvidia.com/gpu" in pending[0]["message"]
    assert "1 node(s) joining" in pending[0]["message"]
    assert first["conditions"][0]["reason"] == "Unschedulable"
    grown = pool_status()
    assert [(n["name"], n["status"]) for n in grown["nodeList"]] == [
        ("h100-0", "Ready"),
        ("h100-1", "Joining"),
    ]
    assert grown["nodeList"][0]["allocated"] == {"nvidia.com/gpu": 8}

    # No process on this machine: the local backend never saw the service.
    assert platform.backend.local.replicas() == [] and platform.backend.local.services() == []

    done = wait_for("all 12 ready", lambda: (s := status())["readyReplicas"] == 12 and s)
    assert done["phase"] == "Ready" and done["pendingReplicas"] == 0
    assert done["nodes"] == {"h100-0": 8, "h100-1": 4}
    assert done["events"][-1]["message"] == "all 12 replica(s) placed: h100-0=8, h100-1=4"
    assert platform.backend.local.replicas() == []
    assert [n["allocated"] for n in pool_status()["nodeList"]] == [
        {"nvidia.com/gpu": 8},
        {"nvidia.com/gpu": 4},
    ]

    nodes = {n["hostname"]: n["replicas"] for n in api.get("/api/v1/nodes").json()["items"]}
    assert nodes == {"node-a": 0, "h100-0": 8, "h100-1": 4}  # this machine runs none of them

    replicas = api.get("/apis/kgpu.dev/v1alpha1/replicas", params={"service": "default/llm"}).json()["items"]
    assert [(r["name"], r["node"], r["phase"]) for r in replicas[7:9]] == [
        ("llm-7", "h100-0", "Ready"),
        ("llm-8", "h100-1", "Ready"),
    ]
    assert all(r["pid"] is None and r["url"] is None for r in replicas)

    # The CLI through the same API: node of each replica, pending count and nodes of the service.
    monkeypatch.setattr(cli_client.httpx, "Client", _client_for(api))
    out = CliRunner().invoke(cli_app, ["get", "replicas", "llm", "-o", "wide"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    rows = {line.split()[0]: line.split() for line in out.output.splitlines()[1:] if line.strip()}
    assert len(rows) == 12 and rows["llm-11"][6] == "h100-1" and rows["llm-0"][6] == "h100-0"
    out = CliRunner().invoke(cli_app, ["get", "services", "-o", "wide"], env={"COLUMNS": "400"})
    assert out.exit_code == 0, out.output
    row = next(line.split() for line in out.output.splitlines() if line.split()[1:2] == ["llm"])
    assert row[3:5] == ["12/12", "Ready"] and "h100-0=8,h100-1=4" in row

    # The gateway does not route to simulated replicas: 503 at once, no Retry-After (retrying cannot help).
    started = time.monotonic()
    answer = api.post("/v1/embeddings", json={"model": "llm", "input": "hello"})
    assert answer.status_code == 503 and "retry-after" not in answer.headers
    assert time.monotonic() - started < 0.3  # not held like a service waiting for a replica
    error = answer.json()["error"]
    assert error["code"] == "service_simulated" and "simulated cluster 'lab'" in error["message"]

    # Scale to 2: node 1's virtual GPUs are freed; it goes after the unneeded time, node 0 stays.
    patched = api.patch(
        f"{API}/inferenceservices/llm",
        json={"spec": {"replicas": 2}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200
    scaled_at = time.monotonic()
    small = wait_for(
        "2 replicas", lambda: (s := status())["replicas"] == 2 and s["nodes"] == {"h100-0": 2} and s
    )
    assert small["readyReplicas"] == 2 and len(small["replicaStatuses"]) == 2
    assert [n["allocated"] for n in pool_status()["nodeList"]] == [{"nvidia.com/gpu": 2}, {}]
    wait_for("node 1 removed", lambda: [n["name"] for n in pool_status()["nodeList"]] == ["h100-0"])
    assert time.monotonic() - scaled_at >= UNNEEDED_S
    assert status()["readyReplicas"] == 2  # untouched by the removal

    # Deleted: its replicas go and node 0's GPUs are free again.
    assert api.delete(f"{API}/inferenceservices/llm").status_code == 200
    wait_for("replicas gone", lambda: api.get("/apis/kgpu.dev/v1alpha1/replicas").json()["items"] == [])
    wait_for("GPUs freed", lambda: pool_status()["nodeList"][0]["allocated"] == {})
    assert platform.backend.local.replicas() == []


def test_a_replica_that_no_pool_can_hold_says_why(make_engine):
    sim = SimNodes(make_engine())
    clusters = [cluster(**{"node-join-delay": "0s", "replica-start-delay": "10s"})]
    pools = [pool(min_nodes=1, max_nodes=1)]
    sim.sync(clusters, pools, [], now=0.0)
    services = [
        gpu_service("a100", gpus=1, gpuModels=["A100-80GB"]),
        gpu_service("full", replicas=2, gpus=8),
    ]
    sim.sync(clusters, pools, services, now=1.0)
    (a100,) = sim.replicas("default/a100")
    assert a100.node is None
    assert a100.message == (
        "Unschedulable: no node pool of sim cluster lab offers 1 nvidia.com/gpu (A100-80GB) per node"
    )
    full = sim.replicas("default/full")
    assert [(r.name, r.node, r.phase(5.0)) for r in full] == [
        ("full-0", "h100-0", "Starting"),
        ("full-1", None, "Pending"),
    ]
    assert full[1].message.endswith("node pool(s) h100 at maxNodes")
    assert full[0].phase(11.0) == "Ready"  # the cluster's replica-start-delay after placement


def test_placed_replicas_keep_their_node_and_a_new_service_does_not_displace_them(make_engine):
    sim = SimNodes(make_engine())
    clusters = [cluster(**{"node-join-delay": "0s"})]
    pools = [pool(min_nodes=2, max_nodes=2)]
    sim.sync(clusters, pools, [], now=0.0)
    # "b" sorts after "a" but is placed first; "a" arriving later must not take b's node.
    sim.sync(clusters, pools, [gpu_service("b", replicas=1, gpus=8)], now=1.0)
    assert [r.node for r in sim.replicas("default/b")] == ["h100-0"]
    services = [gpu_service("a", replicas=2, gpus=8), gpu_service("b", replicas=1, gpus=8)]
    sim.sync(clusters, pools, services, now=2.0)
    assert [r.node for r in sim.replicas("default/b")] == ["h100-0"]
    assert sim.replicas("default/b")[0].started_at == 1.0  # not restarted
    assert [r.node for r in sim.replicas("default/a")] == ["h100-1", None]
    # A changed template (another GPU count) places and starts the replica again.
    services = [gpu_service("b", replicas=1, gpus=4)]
    sim.sync(clusters, pools, services, now=3.0)
    assert [(r.node, r.started_at) for r in sim.replicas("default/b")] == [("h100-0", 3.0)]
