"""Where a sim cluster's replicas go: its Ready virtual nodes as a scheduling snapshot, placed by the
same framework and policy as the local backend (`kgpu.backends.base.PLACEMENT_POLICY`).

Each pass builds one snapshot per sim cluster from its Ready nodes (a node is its pool's flavor:
GPUs of one model, exclusive, time-sliced (MPS counts as time slices) or MIG). A replica's GPU
resource becomes a framework request: `nvidia.com/gpu: N` N whole GPUs, `*.shared` a time slice,
`*mig-<profile>` a MIG instance. On top of the framework's own filters, a node must advertise the
resource with enough left (what the device plugin would: a MIG pool only its layout's profiles,
as many as the layout holds) and, when the service names GPU models, be of one of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from kgpu.api.models import NodePool, object_key
from kgpu.api.quantity import parse_quantity
from kgpu.backends.base import PLACEMENT_POLICY, typical_requests
from kgpu.backends.local_devices import DEFAULT_SHARED_SLOTS
from kgpu.gpu.catalog import mig_profile_of_resource
from kgpu.gpu.mig import MIG_MEMORY_SLICES
from kgpu.scheduling.context import RequestContext
from kgpu.scheduling.policies import make_framework
from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot, NodeSpec, Placement

SHARING_OF_POOL = {
    "exclusive": "exclusive",
    "time-slicing": "time-slicing",
    "mps": "time-slicing",
    "mig": "mig",
}


@dataclass
class NodeUse:
    """One Ready node during a pass: what its pool advertises and what replicas took (for reports and the
    node-pool autoscaler, in the device plugin's resource names)."""

    node: object  # SimNode
    pool: NodePool
    offers: dict[str, int]
    used: dict[str, int] = field(default_factory=dict)
    replicas: int = 0

    def room(self, resource: str | None, count: int) -> bool:
        return resource is None or self.offers.get(resource, 0) - self.used.get(resource, 0) >= count

    def take(self, resource: str | None, count: int) -> None:
        if resource is not None:
            self.used[resource] = self.used.get(resource, 0) + count
        self.replicas += 1


def node_spec(name: str, pool: NodePool) -> NodeSpec:
    flavor, sharing = pool.spec.flavor, pool.spec.sharing
    gpus = flavor.gpu_count or 0 if flavor.gpu_model else 0
    mode = SHARING_OF_POOL.get(sharing.mode, "exclusive") if gpus else "exclusive"
    return NodeSpec(
        name=name,
        cpu_milli=int(parse_quantity(flavor.cpu) * 1000) if flavor.cpu is not None else 0,
        memory_mib=int(parse_quantity(flavor.memory) / 2**20) if flavor.memory is not None else 0,
        gpu_count=gpus,
        gpu_model=flavor.gpu_model if gpus else None,
        sharing=mode,
        time_slice_replicas=(sharing.replicas or 0) if mode == "time-slicing" else 0,
    )


def request_of(resource: str | None, count: int, gpu_models: Sequence[str]) -> tuple[PodRequest, int]:
    """The framework request for one unit of the resource, and how many units a replica takes."""
    models = tuple(gpu_models)
    if resource is None:
        return PodRequest(), 1
    if resource.endswith(".shared"):
        return PodRequest(time_slice=True, gpu_models=models), count
    profile = mig_profile_of_resource(resource)
    if profile is not None:
        return PodRequest(mig_profile=profile, gpu_models=models), count
    return PodRequest(gpu_count=count, gpu_milli=MILLI, gpu_models=models), 1


class _Advertised:
    """Filter: the node advertises `count` more of the resource and is one the service accepts."""

    name = "SimNodeAdvertises"

    def __init__(self, nodes: list[NodeUse]) -> None:
        self.nodes = nodes
        self.resource: str | None = None
        self.count = 0
        self.allowed: set[int] = set()

    def filter(self, ctx: RequestContext) -> np.ndarray:
        return np.array(
            [i in self.allowed and use.room(self.resource, self.count) for i, use in enumerate(self.nodes)],
            dtype=bool,
        )


class ClusterPlacer:
    """One sim cluster's Ready nodes, placed through the scheduling framework."""

    def __init__(self, nodes: list[NodeUse]) -> None:
        self.nodes = nodes
        self._index = {id(use): i for i, use in enumerate(nodes)}
        self.snapshot = ClusterSnapshot(
            [node_spec(object_key(use.node.namespace, use.node.name), use.pool) for use in nodes]
        )
        self.framework = make_framework(
            PLACEMENT_POLICY,
            self.snapshot,
            typical_requests(DEFAULT_SHARED_SLOTS),
            rng=np.random.default_rng(0),
        )
        self._advertised = _Advertised(nodes)
        self.framework.filters.append(self._advertised)

    def keep(
        self, use: NodeUse, held: tuple[Placement, ...], request: PodRequest
    ) -> tuple[Placement, ...] | None:
        """Reserve again what a replica held on `use` in the last pass; None if it no longer fits there."""
        node = self._index[id(use)]
        moved = tuple(
            dataclasses.replace(p, node=node, node_name=self.snapshot.nodes[node].name) for p in held
        )
        if not held or not all(_fits(self.snapshot, p) for p in moved):
            return None
        for placement in moved:
            self.framework.reserve(placement, request)
        return moved

    def place(
        self, request: PodRequest, units: int, resource: str | None, count: int, candidates: list[NodeUse]
    ) -> tuple[NodeUse, tuple[Placement, ...]] | None:
        """Place one replica (`units` framework requests on one node) on one of `candidates`."""
        self._advertised.resource, self._advertised.count = resource, count
        self._advertised.allowed = {self._index[id(use)] for use in candidates}
        first = self.framework.schedule(request)
        if first is None:
            return None
        placements = [first]
        ctx = self.framework.context(request)
        for _ in range(units - 1):
            more = self.framework.placement_on(ctx, first.node)
            if more is None:
                for placement in placements:
                    self.framework.unreserve(placement, request)
                return None
            self.framework.reserve(more, request)
            placements.append(more)
        return self.nodes[first.node], tuple(placements)


def _fits(snapshot: ClusterSnapshot, placement: Placement) -> bool:
    """Whether the placement's resources are still free on its node (its pool may have changed)."""
    n = placement.node
    if placement.kind == "none":
        return True
    if any(g >= int(snapshot.gpu_count[n]) for g in placement.gpus):
        return False
    if placement.kind in ("whole", "share", "memory-share"):
        return all(snapshot.gpu_left[n, g] >= placement.milli_per_gpu for g in placement.gpus)
    if placement.kind == "time-slice":
        return all(
            snapshot.time_slice_used[n, g] < snapshot.time_slice_capacity[n, g] for g in placement.gpus
        )
    g = placement.gpus[0]
    bits = ((1 << placement.mig_size) - 1) << placement.mig_start
    return (
        bool(snapshot.mig_capable[n, g])
        and placement.mig_start + placement.mig_size <= MIG_MEMORY_SLICES
        and not int(snapshot.mig_used_mask[n, g]) & bits
    )
