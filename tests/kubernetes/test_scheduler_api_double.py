"""The kgpu scheduler for clusters over HTTP against the API server double: the same placement as
`kgpu sim pack`, binding through the Binding API, events as kube-scheduler writes them."""

from __future__ import annotations

import threading

import pytest

from bench.common.kube_api_double import ApiError, ApiServerDouble, Route
from kgpu.backends.kubernetes.cluster_view import node_object, pod_object
from kgpu.backends.kubernetes.replay import allocation_pct, packing_workload, place_pending, trace_objects
from kgpu.backends.kubernetes.scheduler import KgpuScheduler
from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import NodeSpec
from kgpu.sim.packing import run_packing
from kgpu.sim.traces import DEFAULT_NODES, DEFAULT_PODS, load_nodes, load_pods
from tests.kubernetes.test_operator_watch_api_double import eventually

SEED = 42


def scheduler_for(api: ApiServerDouble, **kwargs) -> KgpuScheduler:
    from kubernetes import client as k8s

    scheduler = KgpuScheduler(k8s.CoreV1Api(api.client()), stop=threading.Event(), **kwargs)
    scheduler.start_watches(watch_timeout_s=30)
    assert scheduler.wait_synced(10)
    return scheduler


@pytest.mark.skipif(not DEFAULT_PODS.is_file(), reason="openb trace not present")
def test_replaying_openb_on_a_node_slice_reaches_sim_pack_allocation_over_http_against_api_double():
    nodes = load_nodes(DEFAULT_NODES)[:12]
    pods = load_pods(DEFAULT_PODS)
    expected = run_packing(nodes, pods, "kgpu", SEED)
    workload = packing_workload(nodes, pods, SEED)
    assert len(workload) == expected["pods"]
    node_objects, pod_objects = trace_objects(nodes, workload)
    with ApiServerDouble() as api:
        for obj in node_objects:
            api.put("v1", "nodes", obj)
        for obj in pod_objects:
            api.put("v1", "pods", obj)
        scheduler = scheduler_for(api)
        try:
            place_pending(scheduler)
        finally:
            scheduler.stop.set()
            api.store.close_watches()
        bound = api.items("v1", "pods", "replay")
    got = allocation_pct(nodes, bound)
    assert abs(got - expected["allocation_pct_at"]["130"]) <= 0.1, (got, expected["allocation_pct_at"]["130"])
    assert scheduler.stats["bound"] == len(workload) - expected["pods_failed"]
    assert all(
        "kgpu.dev/placement" in p["metadata"]["annotations"] for p in bound if p["spec"].get("nodeName")
    )


GPU_TAINT = [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]


def gpu_node(name: str, gpus: int, taints: list | None = None) -> dict:
    obj = node_object(NodeSpec(name, 32_000, 256_000, gpus, "H100-80GB"))
    obj["spec"]["taints"] = taints or []
    return obj


def gpu_pod(name: str, gpus: int = 1, tolerate: bool = True) -> dict:
    obj = pod_object(PodRequest(1000, 1024, gpu_count=gpus, gpu_milli=1000), name, "ml")
    if tolerate:
        obj["spec"]["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    obj["metadata"]["labels"] = {"kgpu.dev/service": "minilm"}
    return obj


@pytest.fixture
def api():
    with ApiServerDouble() as server:
        yield server


def test_a_pod_that_fits_nowhere_gets_kube_schedulers_event_and_condition_over_http_against_api_double(api):
    api.put("v1", "nodes", gpu_node("a-gpu", 1, GPU_TAINT))
    api.put("v1", "nodes", gpu_node("b-cpu", 0))
    api.put("v1", "pods", gpu_pod("big", gpus=2))
    scheduler = scheduler_for(api)
    decision = scheduler.schedule_one()
    assert decision is not None and decision.placement is None
    scheduler.report_failure(api.read("v1", "pods", "big", "ml"), decision.message)
    scheduler.stop.set()
    assert decision.message == "0/2 nodes are available: 2 Insufficient nvidia.com/gpu."
    (event,) = api.items("v1", "events", "ml")
    assert (event["reason"], event["type"], event["involvedObject"]["name"]) == (
        "FailedScheduling",
        "Warning",
        "big",
    )
    assert event["reportingComponent"] == "kgpu" and event["message"] == decision.message
    condition = api.read("v1", "pods", "big", "ml")["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )


def test_taints_and_affinity_are_named_like_kube_scheduler_does_over_http_against_api_double(api):
    api.put("v1", "nodes", gpu_node("a-gpu", 8, GPU_TAINT))
    api.put("v1", "pods", gpu_pod("untolerating", tolerate=False))
    scheduler = scheduler_for(api)
    decision = scheduler.schedule_one()
    scheduler.stop.set()
    assert decision.message == "0/1 nodes are available: 1 node(s) had untolerated taint {nvidia.com/gpu: }."


def test_the_operators_status_shows_the_kgpu_schedulers_reason_over_http_against_api_double(api):
    from tests.kubernetes.test_operator_api_double import operator_for, put_service

    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 4}}})
    operator = operator_for(api)
    operator.reconcile_service("ml", "minilm")
    template = api.read("apps/v1", "deployments", "minilm", "ml")["spec"]["template"]
    assert template["spec"]["schedulerName"] == "kgpu"  # the pods are kgpu's to place
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "minilm-x", "namespace": "ml", **template["metadata"]},
        "spec": template["spec"],
        "status": {"phase": "Pending"},
    }
    api.put("v1", "pods", pod)
    api.put("v1", "nodes", gpu_node("a-gpu", 2, GPU_TAINT))
    scheduler = scheduler_for(api)
    decision = scheduler.schedule_one()
    scheduler.report_failure(api.read("v1", "pods", "minilm-x", "ml"), decision.message)
    scheduler.stop.set()
    status = operator.reconcile_service("ml", "minilm")
    scheduled = status["conditions"][0]
    assert (scheduled["status"], scheduled["reason"]) == ("False", "InsufficientGPU")
    assert "1 Insufficient nvidia.com/gpu" in scheduled["message"]


def test_a_bind_lost_to_another_scheduler_is_undone_and_its_placement_counted_over_http_against_api_double(
    api,
):
    api.put("v1", "nodes", gpu_node("a", 1))
    api.put("v1", "nodes", gpu_node("b", 1))
    api.put("v1", "pods", gpu_pod("p1"))
    api.put("v1", "pods", gpu_pod("p2"))
    scheduler = scheduler_for(api)
    pod = scheduler.next_pod(1.0)
    decision = scheduler.decide(pod)
    other = "b" if decision.placement.node_name == "a" else "a"
    # The default scheduler binds the same pod elsewhere first.
    with api.store.lock:
        api.store.bind(api_route(pod["metadata"]["name"]), {"target": {"name": other}})
    assert scheduler.bind(decision) is False
    assert scheduler.stats["bind_conflicts"] == 1
    eventually(
        lambda: (
            scheduler.accounted.get(decision.uid) is not None
            and scheduler.accounted[decision.uid].node_name == other
        )
    )
    second = scheduler.schedule_one(timeout_s=1.0)
    scheduler.stop.set()
    assert second.placement is not None and second.placement.node_name == decision.placement.node_name


def api_route(pod: str):
    return Route("", "v1", "pods", "ml", pod, "binding")


def test_a_failed_bind_requeues_the_pod_with_a_backoff_over_http_against_api_double(api, monkeypatch):
    import kgpu.backends.kubernetes.scheduler as module

    monkeypatch.setattr(module, "BACKOFF_S", (0.05,))
    api.put("v1", "nodes", gpu_node("a", 1))
    api.put("v1", "pods", gpu_pod("p1"))
    api.store.fail_next.append(("POST", "/pods/p1/binding", ApiError(500, "InternalError", "etcd timeout")))
    scheduler = scheduler_for(api)
    first = scheduler.schedule_one()
    assert scheduler.stats["bind_errors"] == 1 and first.uid not in scheduler.accounted
    second = scheduler.schedule_one(timeout_s=2.0)
    scheduler.stop.set()
    assert second is not None and second.uid == first.uid and scheduler.stats["bound"] == 1
    assert api.read("v1", "pods", "p1", "ml")["spec"]["nodeName"] == "a"


def test_a_parked_pod_is_tried_again_when_a_pod_leaves_over_http_against_api_double(api):
    api.put("v1", "nodes", gpu_node("a", 1))
    api.put("v1", "pods", gpu_pod("p1"))
    scheduler = scheduler_for(api)
    assert scheduler.schedule_one().placement is not None
    api.put("v1", "pods", gpu_pod("p2"))
    eventually(lambda: any(p["metadata"]["name"] == "p2" for p in scheduler.pods.values()))
    assert scheduler.schedule_one(timeout_s=1.0).placement is None  # the only GPU is taken
    with api.store.lock:
        api.store.delete(api_route_plain("p1"))
    second = scheduler.schedule_one(timeout_s=2.0)
    scheduler.stop.set()
    assert second is not None and second.placement is not None and second.name == "p2"


def api_route_plain(pod: str):
    return Route("", "v1", "pods", "ml", pod, None)


def test_the_scheduler_loop_binds_new_pods_and_survives_expired_watches_over_http_against_api_double(api):
    from kubernetes import client as k8s

    api.put("v1", "nodes", gpu_node("a", 2))
    scheduler = KgpuScheduler(k8s.CoreV1Api(api.client()))
    thread = threading.Thread(target=scheduler.run, kwargs={"watch_timeout_s": 30})
    thread.start()
    try:
        api.put("v1", "pods", gpu_pod("p1"))
        eventually(lambda: api.read("v1", "pods", "p1", "ml")["spec"].get("nodeName") == "a")
        api.store.compact(close_watches=True)  # watches resume from a version now too old: 410, list again
        api.put("v1", "pods", gpu_pod("p2"))
        eventually(lambda: api.read("v1", "pods", "p2", "ml")["spec"].get("nodeName") == "a")
        eventually(
            lambda: len([e for e in api.items("v1", "events", "ml") if e["reason"] == "Scheduled"]) == 2
        )
        assert all(i.lists >= 2 for i in scheduler.informers)
    finally:
        scheduler.stop.set()
        api.store.close_watches()
        thread.join(timeout=10)
    assert not thread.is_alive()
    (event, _) = sorted(api.items("v1", "events", "ml"), key=lambda e: e["involvedObject"]["name"])
    assert event["message"] == "Successfully assigned ml/p1 to a"


def shared_pod(name: str, resource: str) -> dict:
    request = (
        PodRequest(100, 0, time_slice=True)
        if resource.endswith(".shared")
        else PodRequest(100, 0, mig_profile=resource.split("mig-")[1])
    )
    return pod_object(request, name, "ml")


def test_time_slices_come_from_the_device_plugin_config_the_node_selects_over_http_against_api_double(api):
    from kgpu.backends.kubernetes.nodepool import render_device_plugin_configmap
    from tests.kubernetes._matrix import pool

    shared_pool = pool("l4", "L4", 1, sharing={"mode": "time-slicing", "replicas": 2})
    api.put("v1", "configmaps", render_device_plugin_configmap([shared_pool], "gpu-operator"))
    labels = {"kgpu.dev/gpu-model": "L4", "nvidia.com/device-plugin.config": "kgpu-default-l4"}
    node = {
        "metadata": {"name": "l4-1", "labels": labels},
        "spec": {},
        "status": {
            "allocatable": {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu.shared": "2"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    api.put("v1", "nodes", node)
    for name in ("s1", "s2", "s3"):
        api.put("v1", "pods", shared_pod(name, "nvidia.com/gpu.shared"))
    scheduler = scheduler_for(api, device_plugin_configmap=("gpu-operator", "kgpu-device-plugin-config"))
    eventually(lambda: scheduler.replicas_by_config == {"kgpu-default-l4": 2})
    decisions = [scheduler.schedule_one(timeout_s=1.0) for _ in range(3)]
    scheduler.stop.set()
    assert [d.placement is not None for d in decisions] == [True, True, False]
    assert decisions[2].message == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.shared."


def test_mig_devices_are_counted_per_profile_over_http_against_api_double(api):
    node = {
        "metadata": {
            "name": "h100-1",
            "labels": {"kgpu.dev/gpu-model": "H100-80GB", "nvidia.com/gpu.count": "1"},
        },
        "spec": {},
        "status": {
            "allocatable": {"cpu": "32", "memory": "256Gi", "nvidia.com/mig-3g.40gb": "2"},
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    }
    api.put("v1", "nodes", node)
    for name in ("m1", "m2", "m3"):
        api.put("v1", "pods", shared_pod(name, "nvidia.com/mig-3g.40gb"))
    api.put("v1", "pods", shared_pod("small", "nvidia.com/mig-1g.10gb"))
    scheduler = scheduler_for(api)
    decisions = {d.name: d for d in (scheduler.schedule_one(timeout_s=1.0) for _ in range(4))}
    scheduler.stop.set()
    assert [decisions[n].placement is not None for n in ("m1", "m2", "m3")] == [True, True, False]
    assert decisions["m3"].message == "0/1 nodes are available: 1 Insufficient nvidia.com/mig-3g.40gb."
    assert decisions["small"].placement is None  # the node has no 1g.10gb devices
    assert decisions["small"].message == "0/1 nodes are available: 1 Insufficient nvidia.com/mig-1g.10gb."


def test_no_bind_leaves_the_scheduler_once_leadership_is_lost_over_http_against_api_double(api):
    api.put("v1", "nodes", gpu_node("a", 1))
    api.put("v1", "pods", gpu_pod("p1"))
    scheduler = scheduler_for(api)
    decision = scheduler.decide(scheduler.next_pod(1.0))
    scheduler.stop.set()  # the Lease was lost between the decision and the bind
    assert scheduler.bind(decision) is False
    assert not [r for r in api.store.requests if r.method == "POST"]
    assert api.read("v1", "pods", "p1", "ml")["spec"].get("nodeName") is None
