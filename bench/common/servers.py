"""Start one server under test as a child process, wait until it answers, and stop it cleanly.

Every server gets its own free loopback port and its own log file. Readiness is the real thing: a
``POST /v1/embeddings`` that returns 200 with the expected number of embeddings, not a health route,
because that is what the load generator will send. The child runs in its own process group so that
stopping it also stops whatever it started (uvicorn workers, LitServe workers, kgpu replicas).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import httpx
from rich.console import Console

from bench.common import kgpu_launch
from bench.common.machine import child_env
from bench.common.workload import probe_body

REPO_ROOT = Path(__file__).resolve().parents[2]


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


# ---------------------------------------------------------------- the systems under test

READY_TIMEOUT_S = 180.0
COMMON_DIR = Path(__file__).resolve().parent
console = Console(width=None if sys.stdout.isatty() else 132)


def server_settings(
    device: str, dtype: str, batch_inputs: int, log_dir: Path, model_dir_arg: Path | None, mdir: str
) -> SimpleNamespace:
    """What `server_for` reads, for scripts that start servers without this script's own arguments
    (``model_dir_arg``: the --model-dir given, None for the example's package); creates ``log_dir``."""
    log_dir.mkdir(parents=True, exist_ok=True)
    model_uri = None if model_dir_arg is None else mdir
    return SimpleNamespace(
        device=device, dtype=dtype, batch_inputs=batch_inputs, log_dir=log_dir, model_uri=model_uri
    )


def server_for(system: str, args: argparse.Namespace, mdir: str, state_dir: Path) -> ServerProcess:
    port = free_port()
    log_path = (
        args.log_dir
        / f"{system}-{args.device}{'' if args.batch_inputs == 1 else f'-inputs{args.batch_inputs}'}.log"
    )
    if system == "kgpu":
        model_uri = getattr(args, "model_uri", None)  # None: the example's own model package
        command = kgpu_launch.up_command(
            port, state_dir, args.device, args.dtype, model_uri, getattr(args, "engine_workers", None)
        )
    elif system == "naive":
        command = [
            sys.executable,
            str(COMMON_DIR / "naive_server.py"),
            "--model-dir",
            mdir,
            "--port",
            str(port),
        ]
        command += ["--device", args.device, "--dtype", args.dtype]
    elif system == "litserve":
        command = [
            sys.executable,
            str(COMMON_DIR / "litserve_server.py"),
            "--model-dir",
            mdir,
            "--port",
            str(port),
        ]
        command += ["--device", args.device, "--dtype", args.dtype, "--max-batch-size", "64"]
        command += ["--batch-timeout", "0.005"]
    else:
        raise ValueError(f"not a server system: {system}")
    return ServerProcess(system, command, port, log_path)


@contextlib.contextmanager
def started_servers(
    systems: tuple[str, ...], settings: SimpleNamespace, mdir: str
) -> Iterator[dict[str, ServerProcess]]:
    """Start each system's server (kgpu in a throwaway state directory), wait until every one answers an
    embeddings probe of ``settings.batch_inputs`` inputs, and stop them all on the way out, whatever
    happened; for scripts that measure running servers side by side (``settings``: `server_settings`)."""
    with tempfile.TemporaryDirectory(prefix="kgpu-bench-") as tmp:
        servers = {name: server_for(name, settings, mdir, Path(tmp)) for name in systems}
        try:
            for name, server in servers.items():
                console.print(f"[bold]{name}[/]: starting on port {server.port} (log {server.log_path})")
                server.start(env=child_env())
            inputs = settings.batch_inputs
            for server in servers.values():
                server.wait_ready("/v1/embeddings", probe_body(inputs), inputs, READY_TIMEOUT_S)
            yield servers
        finally:
            for server in servers.values():
                server.stop()


def keep_replica_logs(work_dir: Path, server_log: Path) -> list[str]:
    """Copy the replica logs out of the throwaway state directory, next to the `kgpu up` log."""
    kept = []
    for index, log in enumerate(sorted(work_dir.rglob("*.log"))):
        target = server_log.with_name(f"{server_log.stem}-replica{index}-{log.name}")
        shutil.copyfile(log, target)
        kept.append(str(target))
    return kept


def replica_url(kgpu_base: str) -> str:
    """The one replica's own address, from the control plane's replica list."""
    items = httpx.get(f"{kgpu_base}/apis/kgpu.dev/v1alpha1/replicas", timeout=10).json()["items"]
    ready = [r for r in items if r["phase"] == "Ready" and r["url"]]
    if len(ready) != 1:
        raise RuntimeError(f"expected one ready replica, found {len(ready)}")
    return ready[0]["url"]
