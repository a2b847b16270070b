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
    assets = [a for a in re.findall(r'(?:src|href)="([^"]+)"', page.text) if not a.startswith("#")]
    # Relative: nothing from a CDN (uPlot is vendored in the package).
    assert sorted(assets) == [
        "console.css",
        "console.js",
        "core.js",
        "pages.js",
        "vendor/uplot/uPlot.iife.min.js",
        "vendor/uplot/uPlot.min.css",
    ]
    for asset in assets:
        assert client.get(f"/console/{asset}").status_code == 200


def test_console_script_reads_only_this_server():
    for name in ("console.js", "core.js", "pages.js"):
        text = (CONSOLE_DIR / name).read_text()
        assert "http://" not in text and "https://" not in text, name
    script = (CONSOLE_DIR / "console.js").read_text()
    for name in ("kgpu_gateway_requests_total", "kgpu_gateway_request_duration_seconds_bucket"):
        assert name in script


def test_uplot_is_vendored_at_its_pinned_version_with_its_license():
    vendor = CONSOLE_DIR / "vendor" / "uplot"
    assert (
        (vendor / "uPlot.iife.min.js")
        .read_text()
        .startswith("/*! https://github.com/leeoniya/uPlot (v1.6.32) */")
    )
    assert "uPlot 1.6.32" in (vendor / "README.md").read_text()
    assert (vendor / "LICENSE").read_text().startswith("The MIT License")
