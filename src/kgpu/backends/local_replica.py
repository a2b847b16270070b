"""One local replica: a child process rendered from its `ReplicaSpec`, and its lifecycle.

Start it, report it to the gateway when its readiness path answers, restart it with
exponential backoff when it exits on its own, and on stop take it out of routing,
wait for its in-flight requests, then SIGTERM (the server drains) and finally SIGKILL.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from kgpu.backends.base import ReplicaHooks, ReplicaStatus
from kgpu.backends.local_devices import Assignment
from kgpu.serving.gateway_secret import GATEWAY_SECRET_ENV, replica_secret
from kgpu.serving.replica_spec import KGPU_COMMAND, ReplicaSpec, local_search_path
from kgpu.terminal_text import shown

log = logging.getLogger("kgpu.backends.local")

# "2026-01-01 12:00:00,123 INFO kgpu.serving: " in front of a replica's log lines.
_LOG_PREFIX = re.compile(r"^\d{4}-\d\d-\d\d [\d:,.]+ \w+ [\w.]+: ")
BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 30.0
# A replica that served this long before exiting starts its backoff afresh.
HEALTHY_RUN_S = 60.0
DRAIN_TIMEOUT_S = 30.0
TERM_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Ask Linux to SIGTERM the replica if the control plane dies, so none is orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except OSError:
        pass


@dataclass
class LocalReplica:
    service: str
    name: str
    node: str
    spec: ReplicaSpec  # what the process is (argv, env, probes), the same as a pod's container
    assignment: Assignment
    log_path: Path
    hooks: ReplicaHooks
    template: str = ""  # hash of the service spec the replica was made from
    phase: str = "Pending"
    restarts: int = 0
    port: int | None = None
    process: asyncio.subprocess.Process | None = None
    started_at: float | None = None
    ready_at: float | None = None
    last_exit_code: int | None = None
    message: str = ""
    _stopping: bool = False
    _task: asyncio.Task | None = field(default=None, repr=False)

    @property
    def url(self) -> str | None:
        return f"http://127.0.0.1:{self.port}" if self.port else None

    def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"replica-{self.name}")

    def status(self) -> ReplicaStatus:
        return ReplicaStatus(
            name=self.name,
            service=self.service,
            phase=self.phase,
            node=self.node,
            device=self.assignment.label,
            url=self.url if self.phase in ("Ready", "Draining") else None,
            pid=self.process.pid if self.process and self.process.returncode is None else None,
            restarts=self.restarts,
            started_at=self.started_at,
            ready_at=self.ready_at,
            last_exit_code=self.last_exit_code,
            message=self.message or self._progress(),
            runtime=self.spec.runtime,
            metrics_path=self.spec.metrics_path,
        )

    def _progress(self) -> str:
        """The replica's last log line; while it loads, with how long it has been loading."""
        line = self.last_log_line()
        if self.phase != "Loading" or self.started_at is None:
            return line
        return f"loading for {time.time() - self.started_at:.0f}s" + (f": {line}" if line else "")

    def last_log_line(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2048))
                text = f.read().decode(errors="replace")
            # uvicorn's coloured levels and a progress bar's cursor moves go (kgpu.terminal_text).
            lines = [clean for line in text.splitlines() if (clean := shown(line, limit=len(line)))]
            return _LOG_PREFIX.sub("", lines[-1])[:160] if lines else ""
        except OSError:
            return ""

    def _env(self) -> dict[str, str]:
        # The spec's defaults first: the shell kgpu runs in may set them otherwise.
        env = {**self.spec.defaults(self.assignment.device), **os.environ, "PATH": local_search_path()}
        env.update(
            self.spec.environment(
                port=self.port or 0,
                replica=self.name,
                device=self.assignment.device,
                host="127.0.0.1",
                visible_devices=self.assignment.visible_devices,
                memory_fraction=self.assignment.memory_fraction,
            )
        )
        if self.url:  # only the gateway may call it (the URL is known once a port is taken)
            env[GATEWAY_SECRET_ENV] = replica_secret(self.url)
        return env

    def _argv(self, env: dict[str, str]) -> list[str]:
        argv = self.spec.argv(env)
        if self.spec.command == KGPU_COMMAND:  # kgpu's replica runs on the control plane's interpreter
            argv[0] = sys.executable
        return argv

    async def _spawn(self) -> asyncio.subprocess.Process:
        self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logfile = self.log_path.open("ab")
        try:
            env = self._env()
            process = await asyncio.create_subprocess_exec(
                *self._argv(env),
                stdout=logfile,
                stderr=asyncio.subprocess.STDOUT,
                stdin=asyncio.subprocess.DEVNULL,
                env=env,
                preexec_fn=_die_with_parent,
            )
        finally:
            logfile.close()
        return process

    async def _probe_ready(self, client: httpx.AsyncClient) -> bool:
        try:
            response = await client.get(f"{self.url}{self.spec.readiness_path}")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _supervise(self) -> None:
        backoff = BACKOFF_START_S
        async with httpx.AsyncClient(timeout=2.0) as client:
            while not self._stopping:
                self.phase = "Starting"
                self.ready_at = None
                self.started_at = time.time()
                self.process = await self._spawn()
                # Running, not yet answering its readiness path: loading its model (the log says how far).
                self.phase = "Loading"
                self.hooks.on_event(
                    self.service,
                    f"replica {self.name} started (pid {self.process.pid}, {self.assignment.label})",
                )
                exit_code = await self._watch(client)
                self.last_exit_code = exit_code
                self.hooks.on_gone(self.service, self.name)
                if self._stopping:
                    break
                ran_for = time.time() - (self.started_at or time.time())
                if ran_for > HEALTHY_RUN_S:
                    backoff = BACKOFF_START_S
                self.restarts += 1
                self.phase = "CrashLoopBackOff"
                self.message = f"exited with code {exit_code}; restarting in {backoff:.0f}s"
                self.hooks.on_restart(self.service, self.name)
                self.hooks.on_event(self.service, f"replica {self.name} {self.message}")
                log.warning("replica %s %s (log: %s)", self.name, self.message, self.log_path)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                self.message = ""

    async def _watch(self, client: httpx.AsyncClient) -> int:
        """Probe readiness until the process exits; return its exit code."""
        assert self.process is not None
        while True:
            try:
                return await asyncio.wait_for(
                    self.process.wait(), timeout=0.2 if self.ready_at is None else 1.0
                )
            except asyncio.TimeoutError:
                pass
            if self.ready_at is None and not self._stopping and await self._probe_ready(client):
                self.ready_at = time.time()
                self.phase = "Ready"
                took = self.ready_at - (self.started_at or self.ready_at)
                self.hooks.on_ready(self.service, self.name, self.url or "")
                self.hooks.on_event(self.service, f"replica {self.name} ready in {took:.1f}s")

    async def stop(self, drain: bool = True) -> None:
        """Take the replica out of routing, let in-flight requests finish, then stop it."""
        self._stopping = True
        if self.process is not None and self.process.returncode is None:
            self.phase = "Draining"
            self.hooks.on_draining(self.service, self.name)
            if drain:
                deadline = time.monotonic() + DRAIN_TIMEOUT_S
                while self.hooks.outstanding(self.service, self.name) > 0 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), TERM_TIMEOUT_S)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        self.hooks.on_gone(self.service, self.name)
        self.phase = "Terminated"
        self.hooks.on_event(self.service, f"replica {self.name} stopped")
