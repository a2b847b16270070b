from __future__ import annotations

import httpx
from typer.testing import CliRunner

from kgpu.cli.main import app


def test_top_once_shows_the_service_with_its_request_rate(platform):
    with httpx.Client(base_url=platform.url, timeout=30) as http:
        for i in range(5):
            assert http.post("/v1/embeddings", json={"model": "minilm", "input": f"t{i}"}).status_code == 200
    result = CliRunner().invoke(
        app, ["top", "--once", "--interval", "0.5", "--server", platform.url], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "GPUs" in result.output and "Services" in result.output
    # The service's own row ("default/minilm-infinity" is another service's).
    [line] = [ln for ln in result.output.splitlines() if "default/minilm" in ln.split()]
    ready = sum(1 for r in platform.replicas() if r["phase"] == "Ready")
    assert f"{ready}/" in line
