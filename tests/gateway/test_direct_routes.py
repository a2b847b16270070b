"""The gateway's OpenAI inference POSTs are called straight from the ASGI stack (kgpu.gateway.direct_routes),
and everything in front of them still holds: the request guard, the server's 500, other methods' 405."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from kgpu.controlplane.request_guard import guard_settings
from kgpu.controlplane.server import create_server_app
from kgpu.gateway.direct_routes import DirectRoutes
from tests.controlplane.test_auth import make_platform


def _app_with(router: APIRouter, paths: tuple[str, ...]) -> FastAPI:
    app = FastAPI()

    @app.post("/{anything:path}")  # declared first: FastAPI's routing would send every POST here
    async def catch_all(anything: str) -> dict:
        return {"answered_by": "catch_all"}

    app.include_router(router)
    app.add_middleware(DirectRoutes, router=router, paths=paths)
    return app


def test_a_listed_post_reaches_its_endpoint_without_fastapis_routing():
    router = APIRouter()

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        return JSONResponse({"answered_by": "direct", "body": (await request.body()).decode()})

    @router.post("/v1/other")
    async def other(request: Request) -> JSONResponse:
        return JSONResponse({"answered_by": "other"})

    with TestClient(_app_with(router, ("/v1/embeddings",))) as client:
        assert client.post("/v1/embeddings", content=b"{}").json() == {"answered_by": "direct", "body": "{}"}
        # Paths not listed, and other methods, go through FastAPI as before.
        assert client.post("/v1/other").json() == {"answered_by": "catch_all"}
        assert client.get("/v1/embeddings").status_code == 405


def test_an_endpoint_that_fails_is_the_servers_500():
    router = APIRouter()

    @router.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        raise RuntimeError("boom")

    with TestClient(_app_with(router, ("/v1/embeddings",)), raise_server_exceptions=False) as client:
        response = client.post("/v1/embeddings", content=b"{}")
    assert response.status_code == 500 and "boom" not in response.text


def test_a_path_without_a_post_route_is_refused_at_construction():
    with pytest.raises(ValueError, match="/v1/missing"):
        DirectRoutes(FastAPI(), APIRouter(), ["/v1/missing"])


@pytest.fixture
def up(tmp_path):
    """`kgpu up`'s app on 127.0.0.1:8000 (no replica: inference that passes the guard gets the gateway's 404)."""
    app = create_server_app(make_platform(tmp_path), guard=guard_settings("127.0.0.1"))
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/embeddings", "/v1/chat/completions", "/v1/completions"])
def test_the_request_guard_still_runs_before_inference(up, path):
    body = b'{"model": "nothing", "input": "x"}'
    json_type = {"content-type": "application/json"}
    cross_origin = up.post(path, content=body, headers={**json_type, "origin": "http://attacker.example"})
    assert cross_origin.status_code == 403 and "cross-origin" in cross_origin.text
    assert up.post(path, content=body, headers={"content-type": "text/plain"}).status_code == 415
    rebound = up.post(path, content=body, headers={**json_type, "host": "attacker.example"})
    assert rebound.status_code == 421
    passed = up.post(path, content=body, headers=json_type)
    assert passed.status_code == 404 and "model 'nothing' is not served here" in passed.text
    too_large = up.post(path, content=b"x", headers={**json_type, "content-length": str(64 * 1024**2)})
    assert too_large.status_code == 413
    assert up.get(path).status_code == 405


def test_a_failure_in_the_gateway_on_the_servers_front_path_is_a_plain_500(tmp_path, monkeypatch):
    """On `kgpu up`'s app the inference routes run ahead of FastAPI's stack: a bug there still answers
    500 without its text, and the server goes on answering."""
    platform = make_platform(tmp_path)
    platform.resolve_model = lambda model: "default/minilm"

    async def broken_forward(*args, **kwargs):
        raise RuntimeError("secret detail of a bug")

    monkeypatch.setattr(platform.router, "forward", broken_forward)
    app = create_server_app(platform, guard=guard_settings("127.0.0.1"))
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as client:
        body = b'{"model": "minilm", "input": "x"}'
        response = client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 500 and "secret" not in response.text
        assert client.get("/healthz").status_code == 200
