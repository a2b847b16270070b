"""The in-cluster gateway routes a kubernetes-backed service to its Service's cluster DNS name.

The cluster's API server is faked (an autospec'd CustomObjectsApi over an in-memory store, see
test_controlplane_cluster.py); the platform, reconciler, registry and router are the real code.
"""

from __future__ import annotations

import asyncio
import copy

import pytest

from kgpu.api.errors import ResourceValidationError
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.gateway.upstream import UpstreamResponse
from tests.controlplane.test_api import RecordingBackend, cpu_node
from tests.kubernetes.test_controlplane_cluster import (
    CLUSTER,
    READY_STATUS,
    SERVICE,
    apply,
    cluster,  # noqa: F401  (fixture)
    reconcile,
)

NOT_READY = {**READY_STATUS, "phase": "Pending", "readyReplicas": 0}


def in_cluster_platform(tmp_path, **config) -> Platform:
    return Platform(
        PlatformConfig(state_dir=tmp_path, in_cluster=True, **config),
        inventory=cpu_node(),
        backend_factory=RecordingBackend,
    )


def entries(platform: Platform, key: str) -> list[tuple[str, str]]:
    return [(e.replica, e.url) for e in platform.registry.endpoints(key)]


def test_faked_api_server_in_cluster_gateway_registers_the_service_dns_endpoint_once_ready(
    tmp_path,
    cluster,  # noqa: F811
):
    platform = in_cluster_platform(tmp_path)
    apply(platform, SERVICE)  # no Cluster registered: the gateway's own cluster
    reconcile(platform)
    [create] = cluster.calls("create_namespaced_custom_object")
    assert create.args[2:4] == ("ml", "inferenceservices")
    [connected] = cluster.connected
    assert connected.spec.kubeconfig is None and connected.spec.kube_context is None  # in-cluster config
    assert entries(platform, "ml/minilm") == []  # nothing ready: requests wait at the gateway

    cluster.write_status("inferenceservices", "ml", "minilm", READY_STATUS)
    reconcile(platform)
    assert entries(platform, "ml/minilm") == [("svc/minilm", "http://minilm.ml.svc.cluster.local:80")]
    assert platform.resolve_model("ml/minilm") == "ml/minilm"

    cluster.write_status("inferenceservices", "ml", "minilm", NOT_READY)
    reconcile(platform)
    assert entries(platform, "ml/minilm") == []

    cluster.write_status("inferenceservices", "ml", "minilm", READY_STATUS)
    reconcile(platform)
    platform.store.delete("InferenceService", "ml", "minilm")
    reconcile(platform)
    assert entries(platform, "ml/minilm") == []
    assert cluster.objects == {}


def test_faked_api_server_router_picks_the_cluster_service_endpoint(tmp_path, cluster):  # noqa: F811
    platform = in_cluster_platform(tmp_path, cluster_domain="corp.internal")
    other = copy.deepcopy(SERVICE)
    other["metadata"] = {"name": "bge", "namespace": "search"}
    apply(platform, SERVICE)
    apply(platform, other)
    reconcile(platform)
    cluster.write_status("inferenceservices", "ml", "minilm", READY_STATUS)
    cluster.write_status("inferenceservices", "search", "bge", READY_STATUS)
    reconcile(platform)
    assert entries(platform, "search/bge") == [("svc/bge", "http://bge.search.svc.corp.internal:80")]

    sent: list[str] = []

    class RecordingUpstream:  # what the gateway would send over HTTP
        async def post(
            self, url: str, body: bytes, content_type: str, extra_headers=None
        ) -> UpstreamResponse:
            sent.append(url)
            return UpstreamResponse(200, {"content-type": "application/json"}, b'{"data": []}')

        async def close(self) -> None:
            pass

    platform.router.upstream = RecordingUpstream()
    result = asyncio.run(platform.router.forward("ml/minilm", "/v1/embeddings", b"{}", "application/json"))
    assert (result.status, result.replica) == (200, "svc/minilm")
    assert sent == ["http://minilm.ml.svc.corp.internal:80/v1/embeddings"]


def test_faked_api_server_a_control_plane_outside_the_cluster_registers_no_cluster_dns_endpoint(
    tmp_path,
    cluster,  # noqa: F811
):
    platform = Platform(
        PlatformConfig(state_dir=tmp_path), inventory=cpu_node(), backend_factory=RecordingBackend
    )
    apply(platform, CLUSTER)
    apply(platform, SERVICE)
    reconcile(platform)
    cluster.write_status("inferenceservices", "ml", "minilm", READY_STATUS)
    reconcile(platform)
    assert platform.status.service(platform.resources.services()[0])["readyReplicas"] == 2
    assert entries(platform, "ml/minilm") == []  # *.svc.cluster.local does not resolve out here


@pytest.mark.parametrize("in_cluster", [True, False])
def test_the_in_cluster_gateway_leaves_the_model_check_to_the_cluster_image(tmp_path, in_cluster):
    config = PlatformConfig(state_dir=tmp_path, in_cluster=in_cluster)
    platform = Platform(config, inventory=cpu_node(), backend_factory=RecordingBackend)
    body = copy.deepcopy(SERVICE)
    body["spec"]["model"]["uri"] = "pkg:only_in_the_runtime_image"
    if in_cluster:
        apply(platform, body)
    else:
        with pytest.raises(ResourceValidationError) as refused:
            apply(platform, body)
        assert [e.path for e in refused.value.errors] == ["spec.model.uri"]
