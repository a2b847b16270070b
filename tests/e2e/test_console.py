"""The web console in headless Chromium against a real platform (node, service, live traffic)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
)


POOLS = "/apis/kgpu.dev/v1alpha1/namespaces/console/nodepools"
EXAMPLE_POOL = Path(__file__).parents[2] / "examples" / "gpu-pool.yaml"


@pytest.fixture
def mig_pool(platform):
    """The H200 MIG pool example, in a project of its own so other tests never see it."""
    text = EXAMPLE_POOL.read_text().replace("namespace: default", "namespace: console")
    response = platform.http.put(
        f"{POOLS}/h200-mig", content=text, headers={"content-type": "application/yaml"}
    )
    assert response.status_code in (200, 201), response.text
    yield "console/h200-mig"
    platform.http.delete(f"{POOLS}/h200-mig")


def test_console_shows_node_pool_service_and_live_request_rate(platform, mig_pool, tmp_path):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            offsite: list[str] = []
            page.on("request", lambda r: None if r.url.startswith(platform.url) else offsite.append(r.url))
            page.goto(f"{platform.url}/console", timeout=10_000)
            assert page.url.endswith("/console/")

            hostname = platform.http.get("/api/v1/nodes").json()["items"][0]["hostname"]
            page.locator(f'.node[data-node="{hostname}"]').wait_for(timeout=5_000)
            pool = page.locator(f'tr[data-pool="{mig_pool}"]')
            pool.wait_for(timeout=5_000)
            pool_text = pool.inner_text()
            assert "8x H200-141GB" in pool_text and "1x 4g.71gb" in pool_text and "1x 3g.71gb" in pool_text
            row = page.locator('tr[data-service="default/minilm"]')
            row.wait_for(timeout=5_000)
            ready = sum(1 for r in platform.replicas() if r["phase"] == "Ready")
            assert row.locator(".replicas").inner_text().startswith(f"{ready}/")

            # Traffic after the page's first read shows up as a request rate on a later refresh.
            page.wait_for_function("Number(document.body.dataset.refreshes) >= 1", timeout=5_000)
            with httpx.Client(base_url=platform.url, timeout=30) as http:
                for i in range(6):
                    response = http.post("/v1/embeddings", json={"model": "minilm", "input": f"console {i}"})
                    assert response.status_code == 200
            # Read the rate and p99 of the same refresh (the next one may see no new traffic).
            traffic = page.wait_for_function(
                """() => {
                    const row = document.querySelector('tr[data-service="default/minilm"]');
                    const rps = row && parseFloat(row.querySelector(".rps").textContent);
                    return rps > 0 && {rps, p99: row.querySelector(".p99").textContent};
                }""",
                timeout=8_000,
            ).json_value()
            assert traffic["rps"] > 0
            assert re.fullmatch(r"\d+(\.\d+)? ms", traffic["p99"]), traffic
            assert int(row.locator(".total").inner_text()) >= 6

            screenshot = tmp_path / "console.png"
            page.screenshot(path=str(screenshot), full_page=True)
            assert offsite == []
        finally:
            browser.close()
    data = screenshot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
