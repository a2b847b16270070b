"""The one interface between the control plane and every backend (local, sim, kubernetes).

The control plane's backend registry (`kgpu.controlplane.registry`) resolves which Cluster a
service or pool runs on and calls the backend of that cluster's kind through `Backend` only:
make these replicas and pools exist, remove them, report what exists. Nothing here knows the
REST layer or the store; nothing in the control plane reaches past this protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from kgpu.api.models import Cluster, InferenceService, NodePool
from kgpu.scheduling.requests import MILLI, PodRequest

# The placement policy of every backend that places replicas itself (local, sim): one policy, so a
# sim cluster plans with the placement this machine would make.
PLACEMENT_POLICY = "kgpu"


def typical_requests(shared_slots: int) -> list[PodRequest]:
    """What the policy measures fragmentation against: whole GPUs and one shared slot of a GPU."""
    return [
        PodRequest(gpu_count=1, gpu_milli=MILLI),
        PodRequest(gpu_count=1, gpu_milli=MILLI // shared_slots),
    ]


@dataclass
class ReplicaStatus:
    """What a backend reports about one replica (the rows of `kgpu get replicas`)."""

    name: str
    service: str  # "<namespace>/<name>"
    phase: str  # Pending | Starting | Loading (process up, model loading) | Ready | Draining | CrashLoopBackOff | Terminated
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
    runtime: str = "kgpu"  # kgpu, command or image (spec.runtime.kind)
    metrics_path: str | None = None  # where a command runtime's server serves Prometheus metrics

    def to_dict(self) -> dict:
        return asdict(self)


def service_phase(
    desired: int, ready: int, *, crashing: bool = False, pending: bool = False, placed_all: bool = True
) -> tuple[str, str]:
    """(phase, reason) of a service from its replicas, the same rule for every backend that has them."""
    if desired == 0:
        return "ScaledToZero", "NoReplicasWanted"
    if ready >= desired:
        return "Ready", "AllReplicasReady"
    if crashing:
        return "Degraded", "ReplicaCrashLoop"
    if pending:
        return "Pending", "Unschedulable"
    if not placed_all:
        return "Progressing", "Placing"
    return "Progressing", "ReplicasStarting"


def ready_condition(phase: str, reason: str, message: str) -> dict:
    """The service's `Ready` condition: true when every wanted replica is ready (or none is wanted)."""
    return {
        "type": "Ready",
        "status": "True" if phase in ("Ready", "ScaledToZero") else "False",
        "reason": reason,
        "message": message,
    }


@dataclass
class ReplicaHooks:
    """How a backend that runs replica processes tells the gateway and the event log about them."""

    on_ready: Callable[[str, str, str], None]  # service, replica, url
    on_gone: Callable[[str, str], None]  # service, replica
    on_draining: Callable[[str, str], None]  # service, replica
    outstanding: Callable[[str, str], int]  # in-flight requests the gateway sent it
    on_restart: Callable[[str, str], None]
    on_event: Callable[[str, str], None]  # service, message


@dataclass
class RouteHooks:
    """How a backend tells the gateway's registry about a service's one endpoint (a cluster's Service)."""

    # service key, endpoint name, url, the cluster's key, whether that is the gateway's own cluster
    # (else its Services are reached through a mesh)
    on_ready: Callable[[str, str, str, str, bool], None]
    on_gone: Callable[[str, str], None]  # service key, endpoint name


class DeviceUse(Protocol):
    """The devices one replica holds (labels of the GPU metrics)."""

    gpu_indices: tuple[int, ...] | list[int]
    mig_uuid: str | None
    shared: bool  # a share of the GPU (time-slicing, MPS, a memory share)
    milli_per_gpu: int  # milli-GPU held on each of gpu_indices


class Backend(Protocol):
    """Every call the control plane makes to a backend."""

    async def ensure(self, service: InferenceService, replicas: int, cluster: Cluster | None = None) -> None:
        """Converge the service to exactly `replicas` replicas (start or drain as needed) on `cluster`
        (None: this machine)."""

    async def remove(self, service_key: str) -> None:
        """Drain and stop every replica of a service."""

    async def sync_pools(
        self, clusters: list[Cluster], pools: list[tuple[NodePool, Cluster]], keep: set[str]
    ) -> None:
        """Once per reconcile pass: `clusters` are the registered clusters of this backend's kind, `pools`
        the pools that run on one of them; pools this backend made that are neither in `pools` nor in
        `keep` (pools whose cluster cannot be resolved right now) are removed."""

    def placed(self, service_key: str) -> bool:
        """Whether this backend holds anything of the service (replicas, pending ones, a custom resource)."""

    def replicas(self, service_key: str | None = None) -> list[ReplicaStatus]: ...

    def services(self) -> list[str]:
        """Keys of services that still have replicas (running or stopping)."""

    def service_report(self, service_key: str, desired: int) -> dict | None:
        """The service's status as this backend observes it as a whole, or None: derive it from `replicas`."""

    def ready_replicas(self, service_key: str) -> int | None:
        """Ready replicas counted by the backend itself, or None: the gateway's routable endpoints count."""

    def pool_report(self, pool: NodePool) -> dict | None:
        """The pool's observed status (nodes found, MIG state), or None: not a pool of this backend."""

    def refusal(self, service_key: str) -> str | None:
        """Why no request to the service can be served at all (None: route as usual)."""

    def devices_of(self, replica: str) -> DeviceUse | None:
        """The GPU devices a replica holds on this machine, or None."""

    def node_items(self, pools: list[NodePool]) -> list[dict]:
        """Nodes this backend reports beyond this machine (a sim cluster's virtual nodes), shaped like
        `/api/v1/nodes` items; `pools` are every stored pool."""

    async def restart_replica(self, service_key: str, replica: str) -> bool:
        """Replace one replica (like deleting a pod); False when this backend runs no such replica."""

    def log_path(self, replica: str) -> Path:
        """Where the replica's output is written (read by `kgpu logs`)."""

    async def probe(self, cluster: Cluster) -> str | None:
        """One heartbeat of the cluster: None when it answers, else why not (its API unreachable)."""

    def start(self) -> None:
        """Start the backend's own loops, if any (on the control plane's event loop)."""

    async def shutdown(self) -> None: ...


class OneMachineBackend:
    """The parts of `Backend` a backend without clusters, pools or whole-service reports leaves as they are."""

    async def sync_pools(
        self, clusters: list[Cluster], pools: list[tuple[NodePool, Cluster]], keep: set[str]
    ) -> None:
        return None

    def placed(self, service_key: str) -> bool:
        return service_key in self.services()

    def services(self) -> list[str]:
        raise NotImplementedError

    def service_report(self, service_key: str, desired: int) -> dict | None:
        return None

    def ready_replicas(self, service_key: str) -> int | None:
        return None

    def pool_report(self, pool: NodePool) -> dict | None:
        return None

    def refusal(self, service_key: str) -> str | None:
        return None

    def devices_of(self, replica: str) -> DeviceUse | None:
        return None

    def node_items(self, pools: list[NodePool]) -> list[dict]:
        return []

    async def restart_replica(self, service_key: str, replica: str) -> bool:
        return False

    async def probe(self, cluster: Cluster) -> str | None:
        return None  # this machine, or a virtual cluster: always answers

    def start(self) -> None:
        return None
