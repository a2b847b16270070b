"""The web console is served from package data, with no resource fetched from elsewhere."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from kgpu.controlplane.console import CONSOLE_DIR
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_api import RecordingBackend, cpu_node


@pytest.fixture
def client(tmp_path):
    platform = Platform(
        PlatformConfig(state_dir=tmp_path), inventory=cpu_node(), backend_factory=RecordingBackend
    )
    with TestClient(create_server_app(platform)) as client:
        yield client


def test_console_path_redirects_to_the_page_with_its_assets(client):
    response = client.get("/console", follow_redirects=False)
    assert response.status_code in (301, 302, 307) and response.headers["location"].endswith("/console/")
    page = client.get("/console/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(assets) == ["console.css", "console.js"]  # relative: nothing from a CDN
    for asset in assets:
        assert client.get(f"/console/{asset}").status_code == 200


def test_console_script_reads_only_this_server():
    script = (CONSOLE_DIR / "console.js").read_text()
    assert "http://" not in script and "https://" not in script
    for name in ("kgpu_gateway_requests_total", "kgpu_gateway_request_duration_seconds_bucket"):
        assert name in script
