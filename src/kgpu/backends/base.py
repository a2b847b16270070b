"""The small interface every backend offers: make these replicas exist, report what exists."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from kgpu.api.models import InferenceService, RuntimeSpec


def engine_workers_args(runtime: RuntimeSpec) -> list[str]:
    """``--engine-workers`` for the replica when the spec sets it; otherwise the replica picks by device."""
    return [] if runtime.engine_workers is None else ["--engine-workers", str(runtime.engine_workers)]


@dataclass
class ReplicaStatus:
    """What a backend reports about one replica (the rows of `kgpu get replicas`)."""

    name: str
    service: str  # "<namespace>/<name>"
    phase: str  # Pending | Starting | Ready | Draining | CrashLoopBackOff | Terminated
    node: str
    device: str  # "cpu", "cuda:0", "cuda:0 (shared 1/2)", "MIG-..."
    url: str | None = None
    pid: int | None = None
    restarts: int = 0
    started_at: float | None = None
    ready_at: float | None = None
    last_exit_code: int | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    async def ensure(self, service: InferenceService, replicas: int) -> None:
        """Converge the service to exactly `replicas` replicas (start or drain as needed)."""

    async def remove(self, service_key: str) -> None:
        """Drain and stop every replica of a service."""

    def replicas(self, service_key: str | None = None) -> list[ReplicaStatus]: ...

    def log_path(self, replica: str) -> Path:
        """Where the replica's output is written (read by `kgpu logs`)."""

    def services(self) -> list[str]:
        """Keys of services that still have replicas (running or stopping)."""

    async def shutdown(self) -> None: ...
