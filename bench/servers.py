"""Start one server under test as a child process, wait until it answers, and stop it cleanly.

Every server gets its own free loopback port and its own log file. Readiness is the real thing: a
``POST /v1/embeddings`` that returns 200 with the expected number of embeddings, not a health route,
because that is what the load generator will send. The child runs in its own process group so that
stopping it also stops whatever it started (uvicorn workers, LitServe workers, kgpu replicas).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


class ServerStartError(RuntimeError):
    """The server exited or never became ready; the message carries the tail of its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServerProcess:
    name: str
    command: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen | None = None
    started_at: float = 0.0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, env: dict[str, str] | None = None) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("w")
        log.write("$ " + " ".join(self.command) + "\n")
        log.flush()
        self.started_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def wait_ready(self, path: str, body: bytes, expected_inputs: int, timeout_s: float) -> dict:
        """Poll ``POST path`` until it answers 200 with sane embeddings; return the parsed response."""
        deadline = time.monotonic() + timeout_s
        last = "no answer yet"
        with httpx.Client(timeout=30.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    code = self.process.returncode if self.process else None
                    raise ServerStartError(
                        f"{self.name} exited with code {code} before it was ready:\n{log_tail(self.log_path)}"
                    )
                try:
                    response = client.post(
                        self.base_url + path, content=body, headers={"content-type": "application/json"}
                    )
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        payload = response.json()
                        check_embeddings(payload, expected_inputs)
                        return payload
                    last = f"HTTP {response.status_code}: {response.text[:200]}"
                time.sleep(0.5)
        raise ServerStartError(
            f"{self.name} not ready after {timeout_s:.0f} s (last: {last}):\n{log_tail(self.log_path)}"
        )

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the server (it drains), then SIGKILL its whole process group if anything is left."""
        if self.process is None:
            return
        pgid = self.process.pid  # start_new_session made the child the leader of its own group
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)


def check_embeddings(payload: dict, expected_inputs: int) -> None:
    """The answer must be an OpenAI embeddings list with one finite vector per input."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != expected_inputs:
        got = len(data) if isinstance(data, list) else type(data).__name__
        raise ServerStartError(
            f"expected {expected_inputs} embeddings, got {got}: {json.dumps(payload)[:300]}"
        )
    for item in data:
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(vector, list) or not vector:
            raise ServerStartError(f"embedding missing or not a list of floats: {json.dumps(item)[:200]}")
