"""The server is SIGKILLed in the middle of a rollout: after a restart on the same state, the same resources are
there, the replicas match the desired count, and no replica of the killed server is left running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.e2e.conftest import SERVICE_YAML, free_port

PATH = "/apis/kgpu.dev/v1alpha1/namespaces/default/inferenceservices/minilm"


def _alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a dead child nobody has reaped yet)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _start(port: int, state_dir: Path, log: Path) -> subprocess.Popen:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    cmd = [
        sys.executable,
        "-m",
        "kgpu.cli.main",
        "server",
        "--no-auth",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]
    process = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}")


def _replicas(http: httpx.Client) -> list[dict]:
    return http.get("/apis/kgpu.dev/v1alpha1/replicas", params={"service": "default/minilm"}).json()["items"]


def _wait(predicate, timeout: float, what: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def test_server_killed_mid_rollout_converges_after_restart(tmp_path):
    port, state_dir, log = free_port(), tmp_path / "state", tmp_path / "server.log"
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30)
    first = _start(port, state_dir, log)
    second = None
    try:
        put = http.put(
            PATH, content=SERVICE_YAML.format(replicas=1), headers={"content-type": "application/yaml"}
        )
        assert put.status_code == 201, put.text
        _wait(lambda: http.get(PATH).json()["status"]["readyReplicas"] == 1, 120, "the first replica", log)

        # Roll out: scale to 3 and kill the server while the new replicas are still starting.
        assert http.put(
            PATH, content=SERVICE_YAML.format(replicas=3), headers={"content-type": "application/yaml"}
        ).is_success
        _wait(lambda: sum(1 for r in _replicas(http) if r["pid"]) >= 2, 30, "new replica processes", log)
        before = http.get(PATH).json()["metadata"]
        old_pids = [r["pid"] for r in _replicas(http) if r["pid"]]
        assert any(r["phase"] != "Ready" for r in _replicas(http)), "the rollout finished before the kill"
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)

        # Replicas die with their server (parent-death signal), so none is orphaned.
        _wait(
            lambda: not any(_alive(pid) for pid in old_pids), 60, "the killed server's replicas to exit", log
        )

        second = _start(port, state_dir, log)
        after = http.get(PATH).json()
        assert after["metadata"]["uid"] == before["uid"]
        assert after["metadata"]["resourceVersion"] == before["resourceVersion"]
        assert after["spec"]["replicas"] == 3
        _wait(lambda: http.get(PATH).json()["status"]["readyReplicas"] == 3, 180, "3 ready replicas", log)
        replicas = _replicas(http)
        assert len(replicas) == 3 and all(r["phase"] == "Ready" for r in replicas)
        assert not {r["pid"] for r in replicas} & set(old_pids)
        assert not any(_alive(pid) for pid in old_pids)
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
        http.close()
