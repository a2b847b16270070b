"""Inference under `kgpu server --auth`: the official OpenAI client with a project's token as api_key."""

from __future__ import annotations

from contextlib import contextmanager

import httpx
import openai
import pytest
from fastapi import FastAPI, Request

from kgpu.controlplane.auth import bootstrap_cluster_admin
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import bearer, make_platform, services_path, setup_projects
from tests.live_server import serving


def replica_app(seen: list[dict]) -> FastAPI:
    """A replica speaking the OpenAI embeddings and v2 infer protocols (records what reached it)."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> dict:
        body = await request.json()
        seen.append({"path": "/v1/embeddings", "model": body["model"], **dict(request.headers)})
        return {
            "object": "list",
            "model": body["model"],
            "data": [{"object": "embedding", "index": 0, "embedding": [0.25, 0.5]}],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }

    @app.post("/v2/models/{model}/infer")
    async def infer(model: str, request: Request) -> dict:
        seen.append({"path": f"/v2/models/{model}/infer", **dict(request.headers)})
        return {
            "model_name": model,
            "outputs": [{"name": "y", "shape": [1], "datatype": "FP32", "data": [1]}],
        }

    return app


@contextmanager
def running_gateway(tmp_path, auth: bool):
    """A server with team-a/embed and team-b/other, each served by a replica that records requests."""
    platform = make_platform(tmp_path)
    seen: list[dict] = []
    with serving(replica_app(seen)) as replica_url:
        platform.registry.add("team-a/embed", "embed-0", replica_url)
        platform.registry.add("team-b/other", "other-0", replica_url)
        server_app = create_server_app(platform, auth=auth)
        with serving(server_app) as url:
            admin = bootstrap_cluster_admin(server_app.state.access.store, tmp_path)
            with httpx.Client(base_url=url, timeout=10) as http:
                tokens = setup_projects(http, admin)
                h = {} if not auth else None
                for project, name, key in (("team-a", "embed", "a"), ("team-b", "other", "b")):
                    put = http.put(
                        services_path(project, name), json=service(name), headers=h or bearer(tokens[key])
                    )
                    assert put.status_code == 201, put.text
                yield {"url": url, "tokens": tokens, "admin": admin, "seen": seen, "http": http}


@pytest.fixture
def gateway(tmp_path):
    with running_gateway(tmp_path, auth=True) as running:
        yield running


@pytest.fixture
def open_gateway(tmp_path):
    with running_gateway(tmp_path, auth=False) as running:
        yield running


def openai_client(gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway['url']}/v1", api_key=token, max_retries=0, timeout=10)


def test_a_projects_token_calls_its_services_with_the_openai_client(gateway):
    client = openai_client(gateway, gateway["tokens"]["a"])
    # A bare name is a service of the token's project; the qualified name works too.
    for model in ("embed", "team-a/embed"):
        result = client.embeddings.create(model=model, input="hello")
        assert result.data[0].embedding == [0.25, 0.5]
    assert [s["model"] for s in gateway["seen"]] == ["embed", "embed"]
    # The token stays at the gateway: replicas never see it.
    assert all("authorization" not in s for s in gateway["seen"])
    # A viewer may call its project's services (inference is not a change to the control plane).
    viewer = openai_client(gateway, gateway["tokens"]["a-viewer"])
    assert viewer.embeddings.create(model="embed", input="x").data[0].embedding == [0.25, 0.5]
    assert [m.id for m in client.models.list()] == ["embed"]
    assert [m.id for m in openai_client(gateway, gateway["admin"]).models.list()] == [
        "team-a/embed",
        "team-b/other",
    ]


def test_another_projects_service_looks_like_a_missing_one(gateway):
    b = openai_client(gateway, gateway["tokens"]["b"])
    with pytest.raises(openai.NotFoundError) as hidden:
        b.embeddings.create(model="team-a/embed", input="hello")
    with pytest.raises(openai.NotFoundError) as missing:
        b.embeddings.create(model="team-a/nothing", input="hello")
    assert hidden.value.body["code"] == missing.value.body["code"] == "model_not_found"
    assert hidden.value.body["message"] == missing.value.body["message"].replace("nothing", "embed")
    assert "team-a" not in hidden.value.body["message"].split("known:")[1]  # only team-b's models
    with pytest.raises(openai.NotFoundError):
        b.embeddings.create(model="embed", input="hello")  # "embed" in team-b: none
    assert [m.id for m in b.models.list()] == ["other"]
    http = gateway["http"]
    v2 = "/v2/models/embed/infer"
    body = {"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": ["hi"]}]}
    assert http.post(v2, json=body, headers=bearer(gateway["tokens"]["b"])).status_code == 404
    assert http.post(v2, json=body, headers=bearer(gateway["tokens"]["a"])).status_code == 200
    hidden_v2 = http.post(v2, json=body, headers=bearer(gateway["tokens"]["b"])).json()
    missing_v2 = http.post(
        "/v2/models/nothing/infer", json=body, headers=bearer(gateway["tokens"]["b"])
    ).json()
    assert hidden_v2 == {"error": "model 'embed' is not served here"}
    assert missing_v2 == {"error": "model 'nothing' is not served here"}
    assert [s["path"] for s in gateway["seen"]] == ["/v2/models/embed/infer"]


def test_no_or_a_bad_token_is_401_with_a_bearer_challenge(gateway):
    http = gateway["http"]
    body = {"model": "team-a/embed", "input": "hi"}
    for headers in ({}, {"authorization": "Basic Zm9vOmJhcg=="}, bearer("kgpu_0_nope")):
        for response in (
            http.post("/v1/embeddings", json=body, headers=headers),
            http.post("/v2/models/embed/infer", json={}, headers=headers),
            http.get("/v1/models", headers=headers),
        ):
            assert response.status_code == 401, (response.request.url, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai_client(gateway, "kgpu_0_nope").embeddings.create(model="embed", input="hi")
    # A revoked token stops working for inference at once as well.
    a = gateway["tokens"]["a"]
    assert http.post("/v1/embeddings", json=body, headers=bearer(a)).status_code == 200
    token_id = a.removeprefix("kgpu_").split("_")[0]
    revoked = http.delete(f"/apis/kgpu.dev/v1alpha1/projects/team-a/tokens/{token_id}", headers=bearer(a))
    assert revoked.status_code == 200
    assert http.post("/v1/embeddings", json=body, headers=bearer(a)).status_code == 401
    assert gateway["seen"] == [gateway["seen"][0]]  # only the one accepted request reached a replica


def test_without_auth_nothing_changes(open_gateway):
    gateway = open_gateway
    http = gateway["http"]
    response = http.post("/v1/embeddings", json={"model": "team-a/embed", "input": "hi"})
    assert response.status_code == 200
    assert openai.OpenAI(
        base_url=f"{gateway['url']}/v1", api_key="anything", max_retries=0
    ).embeddings.create(model="team-b/other", input="x").data[0].embedding == [0.25, 0.5]
    # A bare name is the default project's, as before.
    assert http.post("/v1/embeddings", json={"model": "embed", "input": "hi"}).status_code == 404
    assert sorted(m["id"] for m in http.get("/v1/models").json()["data"]) == ["team-a/embed", "team-b/other"]
    assert http.post("/v2/models/embed/infer", json={}).status_code == 404


def test_a_body_too_deep_to_forward_is_a_400(open_gateway):
    # "team-a/embed" makes the gateway re-encode the body for the replica; orjson encodes at most
    # 255 levels but decodes 1024, so 300 levels were a 500.
    body = '{"model": "team-a/embed", "input": %s}' % ("[" * 300 + "1" + "]" * 300)
    response = open_gateway["http"].post(
        "/v1/embeddings", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert "nested too deeply" in error["message"] and error["code"] == "invalid_json"


def test_an_endless_chunked_body_is_cut_off_at_the_limit(open_gateway):
    # The gateway read the whole body before checking its size: a chunked upload that never ends was
    # buffered without bound instead of getting a 413 once past MAX_BODY_BYTES.
    import socket
    from urllib.parse import urlsplit

    from kgpu.gateway.app import MAX_BODY_BYTES

    url = urlsplit(open_gateway["url"])
    chunk = b"x" * 1024 * 1024
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the server may close the connection once it has answered
        head = sock.recv(4096)
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
