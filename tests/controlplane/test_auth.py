"""A control plane shared by teams: tokens, project isolation, roles, GPU quota, `kgpu login`."""

from __future__ import annotations

import json
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from kgpu.cli.client import KgpuClient
from kgpu.cli.main import app as cli_app
from kgpu.controlplane.auth import bootstrap_cluster_admin
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from kgpu.gateway.router import RouterSettings
from tests.controlplane.test_api import RecordingBackend, cpu_node, service, wait_for
from tests.live_server import serving

API = "/apis/kgpu.dev/v1alpha1"


def services_path(project: str, name: str | None = None) -> str:
    path = f"{API}/namespaces/{project}/inferenceservices"
    return f"{path}/{name}" if name else path


def gpu_service(name: str, replicas: int = 1, gpus: int = 1, **spec) -> dict:
    gpu = {"nvidia.com/gpu": gpus}
    return service(name, replicas, resources={"requests": gpu, "limits": gpu}, **spec)


def bearer(token: str) -> dict:
    return {"authorization": f"Bearer {token}"}


def make_platform(tmp_path) -> Platform:
    config = PlatformConfig(
        state_dir=tmp_path, router=RouterSettings(hold_timeout_s=0.3), reconcile_interval_s=0.05
    )
    return Platform(config, inventory=cpu_node(), backend_factory=RecordingBackend)


def setup_projects(client, admin: str) -> dict[str, str]:
    """team-a (quota 4 GPUs) with an admin and a viewer token, team-b with an admin token."""
    h = bearer(admin)
    assert (
        client.post(f"{API}/projects", json={"name": "team-a", "gpuQuota": 4}, headers=h).status_code == 201
    )
    assert client.post(f"{API}/projects", json={"name": "team-b"}, headers=h).status_code == 201
    tokens = {}
    for key, project, role in (
        ("a", "team-a", "admin"),
        ("a-viewer", "team-a", "viewer"),
        ("b", "team-b", "admin"),
    ):
        response = client.post(f"{API}/projects/{project}/tokens", json={"role": role}, headers=h)
        assert response.status_code == 201, response.text
        tokens[key] = response.json()["token"]
    return tokens


@contextmanager
def live_shared_server(tmp_path) -> Iterator[tuple[str, dict[str, str]]]:
    """A real `kgpu server --auth` on a port (for the CLI): its URL and setup_projects' tokens."""
    server_app = create_server_app(make_platform(tmp_path / "state"), auth=True)
    with serving(server_app) as url:
        admin = bootstrap_cluster_admin(server_app.state.access.store, tmp_path / "state")
        with httpx.Client(base_url=url) as http:
            tokens = setup_projects(http, admin)
        yield url, tokens


@pytest.fixture
def shared(tmp_path):
    platform = make_platform(tmp_path)
    with TestClient(create_server_app(platform, auth=True)) as client:
        admin = bootstrap_cluster_admin(client.app.state.access.store, tmp_path)
        client.admin = admin
        client.tokens = setup_projects(client, admin)
        client.platform = platform
        client.state_dir = tmp_path
        yield client


def test_requests_without_a_valid_token_are_refused(shared):
    response = shared.get(services_path("team-a"))
    assert response.status_code == 401
    assert "Authorization: Bearer" in response.json()["detail"]
    assert shared.get(services_path("team-a"), headers=bearer("kgpu_00_nope")).status_code == 401
    assert shared.get(f"{API}/inferenceservices", headers=bearer("not-a-token")).status_code == 401
    assert shared.get(services_path("team-a"), headers=bearer(shared.tokens["a"])).status_code == 200


def test_a_projects_token_cannot_touch_another_project(shared):
    a, b = bearer(shared.tokens["a"]), bearer(shared.tokens["b"])
    assert shared.put(services_path("team-b", "svc-b"), json=service("svc-b"), headers=b).status_code == 201
    assert shared.put(services_path("team-a", "svc-a"), json=service("svc-a"), headers=a).status_code == 201
    before = shared.get(services_path("team-b", "svc-b"), headers=b).json()

    attempts = [
        shared.get(services_path("team-b", "svc-b"), headers=a),
        shared.get(services_path("team-b", "svc-b") + "/status", headers=a),
        shared.get(services_path("team-b"), headers=a),
        shared.get(services_path("team-b"), params={"watch": "true", "timeoutSeconds": 0}, headers=a),
        shared.put(services_path("team-b", "svc-b"), json=service("svc-b", replicas=3), headers=a),
        shared.post(services_path("team-b"), json=service("other"), headers=a),
        shared.patch(
            services_path("team-b", "svc-b"),
            content=json.dumps({"spec": {"replicas": 5}}),
            headers={**a, "content-type": "application/merge-patch+json"},
        ),
        shared.delete(services_path("team-b", "svc-b"), headers=a),
    ]
    for response in attempts:
        assert response.status_code == 403, (response.request.method, response.request.url, response.text)
        assert response.json()["detail"] == 'a token of project "team-a" cannot access project "team-b"'
    after = shared.get(services_path("team-b", "svc-b"), headers=b).json()
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

    # Lists and watches across namespaces show only the token's project; the cluster admin sees all.
    names = [i["metadata"]["name"] for i in shared.get(f"{API}/inferenceservices", headers=a).json()["items"]]
    assert names == ["svc-a"]
    everything = shared.get(f"{API}/inferenceservices", headers=bearer(shared.admin)).json()["items"]
    assert sorted(i["metadata"]["name"] for i in everything) == ["svc-a", "svc-b"]
    stream = shared.get(
        f"{API}/inferenceservices", params={"watch": "true", "timeoutSeconds": 0}, headers=a
    ).text
    assert '"name":"svc-a"' in stream
    assert "svc-b" not in stream

    # Replicas, their logs and the project records of team-b are not visible to team-a either.
    wait_for(lambda: len(shared.get(f"{API}/replicas", headers=bearer(shared.admin)).json()["items"]) == 2)
    replicas = shared.get(f"{API}/replicas", headers=a).json()["items"]
    assert [r["service"] for r in replicas] == ["team-a/svc-a"]
    (shared.state_dir / "svc-b-0.log").write_text("secret of team-b\n")
    assert shared.get(f"{API}/replicas/svc-b-0/log", headers=a).status_code == 404
    assert "secret" in shared.get(f"{API}/replicas/svc-b-0/log", headers=b).text
    assert [p["name"] for p in shared.get(f"{API}/projects", headers=a).json()["items"]] == ["team-a"]
    assert shared.get(f"{API}/projects/team-b", headers=a).status_code == 404
    assert shared.post(f"{API}/projects/team-b/tokens", json={"role": "admin"}, headers=a).status_code == 403
    assert shared.post(f"{API}/projects", json={"name": "team-c"}, headers=a).status_code == 403


def test_a_viewer_reads_but_cannot_write(shared):
    admin, viewer = bearer(shared.tokens["a"]), bearer(shared.tokens["a-viewer"])
    assert shared.put(services_path("team-a", "svc"), json=service("svc"), headers=admin).status_code == 201
    assert shared.get(services_path("team-a", "svc"), headers=viewer).json()["spec"]["replicas"] == 1
    writes = [
        shared.put(services_path("team-a", "svc"), json=service("svc", replicas=2), headers=viewer),
        shared.post(services_path("team-a"), json=service("new"), headers=viewer),
        shared.patch(
            services_path("team-a", "svc"),
            content=json.dumps({"spec": {"replicas": 2}}),
            headers={**viewer, "content-type": "application/merge-patch+json"},
        ),
        shared.delete(services_path("team-a", "svc"), headers=viewer),
        shared.post(f"{API}/projects/team-a/tokens", json={"role": "admin"}, headers=viewer),
    ]
    for response in writes:
        assert response.status_code == 403, (response.request.method, response.text)
        assert 'role "viewer" in project "team-a" can only read' in response.json()["detail"]
    assert shared.get(services_path("team-a", "svc"), headers=viewer).json()["spec"]["replicas"] == 1


def test_tokens_are_stored_hashed(shared):
    token = shared.tokens["a"]
    secret = token.removeprefix("kgpu_").split("_", 1)[1]
    db = sqlite3.connect(shared.state_dir / "kgpu.db")
    rows = db.execute("SELECT token_id, salt, secret_hash FROM api_tokens").fetchall()
    db.close()
    assert len(rows) == 4  # cluster admin + three project tokens
    for token_id, salt, secret_hash in rows:
        assert secret not in (token_id, salt, secret_hash)
        assert len(salt) == 32 and len(secret_hash) == 64
    raw = b"".join(p.read_bytes() for p in shared.state_dir.glob("kgpu.db*"))
    assert secret.encode() not in raw
    # A copy of the stored hash is not a token.
    token_id = token.removeprefix("kgpu_").split("_")[0]
    stored_hash = next(h for t, _, h in rows if t == token_id)
    forged = f"kgpu_{token_id}_{stored_hash}"
    assert shared.get(services_path("team-a"), headers=bearer(forged)).status_code == 401


def test_admin_token_is_written_once_with_owner_only_permissions(shared):
    path = shared.state_dir / "admin-token"
    assert path.read_text().strip() == shared.admin
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert bootstrap_cluster_admin(shared.app.state.access.store, shared.state_dir) is None
    assert path.read_text().strip() == shared.admin


def test_gpu_quota_refuses_what_would_exceed_it(shared):
    a = bearer(shared.tokens["a"])
    assert (
        shared.put(services_path("team-a", "one"), json=gpu_service("one", 2), headers=a).status_code == 201
    )
    refused = shared.put(services_path("team-a", "two"), json=gpu_service("two", 4), headers=a)
    assert refused.status_code == 422
    assert (
        'exceeds project "team-a" GPU quota: 4 requested + 2 in use > 4' in refused.json()["error"]["message"]
    )
    # With autoscaling the quota is held against maxReplicas.
    scaled = gpu_service("two", 1, autoscaling={"maxReplicas": 3})
    refused = shared.post(services_path("team-a"), json=scaled, headers=a)
    assert refused.status_code == 422
    assert "3 requested + 2 in use > 4" in refused.json()["error"]["message"]
    # A replace does not count the service against itself; a patch is checked too.
    assert (
        shared.put(services_path("team-a", "one"), json=gpu_service("one", 4), headers=a).status_code == 200
    )
    patched = shared.patch(
        services_path("team-a", "one"),
        content=json.dumps({"spec": {"replicas": 5}}),
        headers={**a, "content-type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422
    assert "5 requested + 0 in use > 4" in patched.json()["error"]["message"]
    # CPU-only services and projects without a quota are not limited.
    assert shared.put(services_path("team-a", "cpu"), json=service("cpu", 8), headers=a).status_code == 201
    b = bearer(shared.tokens["b"])
    assert (
        shared.put(services_path("team-b", "big"), json=gpu_service("big", 16), headers=b).status_code == 201
    )
    # The cluster admin can raise the quota; a project admin cannot.
    assert shared.patch(f"{API}/projects/team-a", json={"gpuQuota": 8}, headers=a).status_code == 403
    assert shared.patch(
        f"{API}/projects/team-a", json={"gpuQuota": 8}, headers=bearer(shared.admin)
    ).json() == {"name": "team-a", "gpuQuota": 8}
    assert (
        shared.put(services_path("team-a", "two"), json=gpu_service("two", 4), headers=a).status_code == 201
    )


def test_login_saves_the_token_and_the_client_sends_it(tmp_path, monkeypatch):
    config = tmp_path / "conf" / "config.json"
    monkeypatch.setenv("KGPU_CONFIG", str(config))
    monkeypatch.delenv("KGPU_SERVER", raising=False)
    monkeypatch.delenv("KGPU_TOKEN", raising=False)
    result = CliRunner().invoke(
        cli_app, ["login", "--server", "http://cp.example:9000/", "--token", "kgpu_1_s", "--no-check"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(config.read_text()) == {"server": "http://cp.example:9000", "token": "kgpu_1_s"}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600

    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("authorization")))
        return httpx.Response(200, json={"items": []})

    KgpuClient(transport=httpx.MockTransport(handler)).list("inferenceservices", "team-a")
    monkeypatch.setenv("KGPU_TOKEN", "kgpu_2_env")
    KgpuClient(transport=httpx.MockTransport(handler)).list("inferenceservices", "team-a")
    assert seen == [
        (
            "http://cp.example:9000/apis/kgpu.dev/v1alpha1/namespaces/team-a/inferenceservices",
            "Bearer kgpu_1_s",
        ),
        (
            "http://cp.example:9000/apis/kgpu.dev/v1alpha1/namespaces/team-a/inferenceservices",
            "Bearer kgpu_2_env",
        ),
    ]


def test_cli_against_a_shared_server_after_login(tmp_path, monkeypatch):
    with live_shared_server(tmp_path) as (url, tokens):
        with httpx.Client(base_url=url) as http:
            put = http.put(
                services_path("team-a", "svc-a"), json=service("svc-a"), headers=bearer(tokens["a"])
            )
            assert put.status_code == 201

        monkeypatch.setenv("KGPU_CONFIG", str(tmp_path / "config.json"))
        for name in ("KGPU_SERVER", "KGPU_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        runner = CliRunner()
        env = {"COLUMNS": "200"}
        unauthenticated = runner.invoke(cli_app, ["get", "services", "-n", "team-a", "-s", url], env=env)
        assert unauthenticated.exit_code == 1
        assert "kgpu login" in unauthenticated.output
        assert runner.invoke(cli_app, ["login", "--server", url, "--token", tokens["a"]]).exit_code == 0
        listed = runner.invoke(cli_app, ["get", "services", "-n", "team-a"], env=env)
        assert listed.exit_code == 0, listed.output
        assert "svc-a" in listed.output
        other = runner.invoke(cli_app, ["get", "services", "-n", "team-b"], env=env)
        assert other.exit_code == 1
        assert 'cannot access project "team-b"' in other.output


def test_login_asks_the_server_first_and_saves_nothing_it_refuses(tmp_path, monkeypatch):
    config = tmp_path / "config.json"
    monkeypatch.setenv("KGPU_CONFIG", str(config))
    for name in ("KGPU_SERVER", "KGPU_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    runner = CliRunner()
    with live_shared_server(tmp_path) as (url, tokens):
        refused = runner.invoke(cli_app, ["login", "--server", url, "--token", "kgpu_999_wrong"])
        assert refused.exit_code == 1
        assert f"the server at {url} did not accept this token; nothing saved" in refused.output
        assert not config.exists()
        accepted = runner.invoke(cli_app, ["login", "--server", url, "--token", tokens["a"]])
        assert accepted.exit_code == 0, accepted.output
        assert "projects: team-a" in accepted.output
        assert json.loads(config.read_text())["token"] == tokens["a"]
    gone = runner.invoke(cli_app, ["login", "--server", url, "--token", "kgpu_1_other"])
    assert gone.exit_code == 1 and "cannot reach the kgpu server" in gone.output
    assert json.loads(config.read_text())["token"] == tokens["a"]  # the earlier login is kept


def test_a_missing_project_body_is_named(shared):
    # The error for the body as a whole had an empty path: the message read ": Field required".
    response = shared.post(f"{API}/projects", content=b"", headers=bearer(shared.admin))
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "body: Field required"


def test_a_project_body_that_is_not_json_says_so(shared):
    # "1: JSON decode error" passed the character position off as a field; without a JSON content type
    # a valid object was "not a valid dictionary".
    json_type = {**bearer(shared.admin), "content-type": "application/json"}
    response = shared.post(f"{API}/projects", content=b"{nope", headers=json_type)
    assert response.status_code == 422
    assert response.json()["error"]["message"].startswith("body: not valid JSON at character 1: ")
    # A write that does not say it is JSON is refused before it is read (a web page may send it).
    response = shared.post(f"{API}/projects", content=b'{"name": "x"}', headers=bearer(shared.admin))
    assert response.status_code == 415
    assert "application/json" in response.json()["error"]["message"]
