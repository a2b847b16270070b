"""The web console of a server started with --auth, in headless Chromium: token entry, 401 message, revocation."""

from __future__ import annotations

import httpx
import pytest

from kgpu.controlplane.auth import bootstrap_cluster_admin
from kgpu.controlplane.server import create_server_app
from tests.controlplane.test_api import service
from tests.controlplane.test_auth import bearer, make_platform, services_path, setup_projects
from tests.e2e.test_console import CHROMIUM, CHROMIUM_ARGS
from tests.gateway.test_gateway_auth import serving

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
)


def test_console_asks_for_a_token_and_shows_the_projects_services(tmp_path):
    platform = make_platform(tmp_path)
    server_app = create_server_app(platform, auth=True)
    with serving(server_app) as url, httpx.Client(base_url=url, timeout=10) as http:
        admin = bootstrap_cluster_admin(server_app.state.access.store, tmp_path)
        tokens = setup_projects(http, admin)
        for project, name, key in (("team-a", "svc-a", "a"), ("team-b", "svc-b", "b")):
            put = http.put(services_path(project, name), json=service(name), headers=bearer(tokens[key]))
            assert put.status_code == 201, put.text

        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                offsite: list[str] = []
                sent: list[str | None] = []

                def on_request(request) -> None:
                    if not request.url.startswith(url):
                        offsite.append(request.url)
                    elif "/apis/" in request.url:
                        sent.append(request.headers.get("authorization"))

                page.on("request", on_request)
                page.goto(f"{url}/console", timeout=10_000)
                message = page.locator("#auth-message")
                message.wait_for(state="visible", timeout=5_000)
                assert "This server needs an API token" in message.inner_text()
                assert page.locator("tr[data-service]").count() == 0

                page.fill("#token-input", "kgpu_0_wrong")
                page.click("#token-save")
                page.wait_for_function(
                    "document.getElementById('auth-message').textContent.includes('refused this API token')",
                    timeout=5_000,
                )

                page.fill("#token-input", tokens["a"])
                page.click("#token-save")
                page.locator('tr[data-service="team-a/svc-a"]').wait_for(timeout=5_000)
                assert message.is_hidden()
                assert page.locator('tr[data-service="team-b/svc-b"]').count() == 0
                assert page.evaluate("sessionStorage.getItem('kgpu-token')") == tokens["a"]
                assert page.input_value("#token-input") == ""  # not left in the page
                assert f"Bearer {tokens['a']}" in sent

                # The token survives a reload of the tab; a revoked token gets the message again.
                page.reload()
                page.locator('tr[data-service="team-a/svc-a"]').wait_for(timeout=5_000)
                page.screenshot(path=str(tmp_path / "console-auth.png"), full_page=True)
                token_id = tokens["a"].removeprefix("kgpu_").split("_")[0]
                revoked = http.delete(
                    f"/apis/kgpu.dev/v1alpha1/projects/team-a/tokens/{token_id}", headers=bearer(admin)
                )
                assert revoked.status_code == 200
                message.wait_for(state="visible", timeout=6_000)
                assert "refused this API token" in message.inner_text()
                assert page.locator("tr[data-service]").count() == 0

                # Forgetting the token clears it from the tab.
                page.click("#token-clear")
                page.wait_for_function(
                    "document.getElementById('auth-message').textContent.includes('needs an API token')",
                    timeout=5_000,
                )
                assert page.evaluate("sessionStorage.getItem('kgpu-token')") is None
                assert offsite == []
            finally:
                browser.close()
    data = (tmp_path / "console-auth.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
