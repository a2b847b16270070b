"""Capacity kept for pods that only some nodes can host (a pinned GPU model, or a size few nodes have).

FGD's fragmentation is a per-node measure: it asks whether a node's idle GPU suits the typical
pods, not whether the cluster keeps enough room for the pods that can go to few places. When many
pods are pinned to a small GPU model, or some 8-GPU pods need the CPU and memory of only the
largest nodes, flexible pods fill those nodes first and the restricted pods fail early although
other nodes would have taken the flexible ones.

A *group* is the pods that ask for the same number of GPUs and fit the same node types (model,
GPUs, CPU, memory) on an empty cluster;
groups whose node types hold under ``RESTRICTED_SHARE`` of the cluster's GPUs are *restricted*.
For each restricted group: its share ``p`` of the workload's GPU request (a declared statistic
of the workload, not the arrivals to come) and its *capacity*, the GPU its representative pod
(the group's shape with the most requested GPU) could still get on its nodes, counting how many
such pods each node can take. Fluid reasoning: if arrivals go on until the cluster is full, the
group will ask ``p`` x the cluster's free GPU; when its capacity is below that (it is *short*),
no pod should take that capacity while another node fits it: a pod of another group should go
elsewhere, one of the group itself should take as little of it as it can (a pod of the
representative's shape takes one slot wherever it goes, so the rule does not move it).
:meth:`PoolReserve.lost` gives, per candidate node, the milli-GPU of short groups' capacity a
placement there would take away.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kgpu.scheduling.context import RequestContext
from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot

RESTRICTED_SHARE = 0.5  # groups on node types with under half the cluster's GPUs are watched


@dataclass(frozen=True)
class _Group:
    mask: np.ndarray  # (N,) nodes of the group's node types
    share: float  # the group's share of the workload's GPU request
    cpu: int  # the representative pod's request
    memory: int
    milli: int
    count: int


def _static_mask(request: PodRequest, snapshot: ClusterSnapshot) -> np.ndarray:
    """Nodes ``request`` fits when empty (model, GPU count, CPU, memory)."""
    s = snapshot
    fits = (s.cpu_capacity >= request.cpu_milli) & (s.memory_capacity >= request.memory_mib)
    fits &= s.gpu_count >= request.gpu_count
    if request.gpu_models:
        allowed = [s.model_index(name) for name in request.gpu_models]
        fits &= np.isin(s.model_idx, [a for a in allowed if a is not None])
    return fits & (s.model_idx >= 0)


def _slots(group: _Group, cpu_left: np.ndarray, memory_left: np.ndarray, gpu_left: np.ndarray) -> np.ndarray:
    """How many of the group's representative pods each node state can still take."""
    by_cpu = cpu_left // max(group.cpu, 1)
    by_memory = memory_left // max(group.memory, 1)
    if group.milli < MILLI:
        by_gpu = (gpu_left // group.milli).sum(axis=1)
    else:
        by_gpu = (gpu_left == MILLI).sum(axis=1) // group.count
    return np.maximum(0, np.minimum(np.minimum(by_cpu, by_memory), by_gpu))


class PoolReserve:
    """Restricted groups of a workload on a snapshot, and what a placement takes from the short ones."""

    def __init__(self, snapshot: ClusterSnapshot, groups: list[_Group]) -> None:
        self.snapshot = snapshot
        self.groups = groups
        self._capacity = np.zeros((snapshot.num_nodes, len(groups)))
        self._seen = np.full(snapshot.num_nodes, -1, dtype=np.int64)

    @classmethod
    def from_workload(cls, workload: Sequence[PodRequest], snapshot: ClusterSnapshot) -> PoolReserve:
        demand: Counter[tuple[bytes, int]] = Counter()
        shapes: dict[tuple[bytes, int], Counter[PodRequest]] = {}
        masks: dict[tuple[bytes, int], np.ndarray] = {}
        seen: dict[tuple, tuple[bytes, int]] = {}
        for r in workload:
            if r.kind not in ("whole", "share"):
                continue
            key = seen.get(r.shape)
            if key is None:
                mask = _static_mask(r, snapshot)
                key = seen[r.shape] = (mask.tobytes(), r.gpu_count)
                masks[key] = mask
            demand[key] += r.total_gpu_milli
            shapes.setdefault(key, Counter())[r] += r.total_gpu_milli
        total = sum(demand.values())
        capacity = snapshot.gpu_capacity_milli.sum(axis=1)
        cluster = capacity.sum()
        groups: list[_Group] = []
        for key, milli in demand.items():
            mask = masks[key]
            if not mask.any() or capacity[mask].sum() >= RESTRICTED_SHARE * cluster:
                continue
            rep = shapes[key].most_common(1)[0][0]
            groups.append(
                _Group(mask, milli / total, rep.cpu_milli, rep.memory_mib, rep.gpu_milli, rep.gpu_count)
            )
        return cls(snapshot, groups)

    def capacity(self) -> np.ndarray:
        """(N, groups) milli-GPU each node can still give each group's representative pod."""
        s = self.snapshot
        stale = np.flatnonzero(self._seen != s.version)
        if len(stale):
            for j, g in enumerate(self.groups):
                slots = _slots(g, s.cpu_left[stale], s.memory_left[stale], s.gpu_left[stale])
                self._capacity[stale, j] = np.where(g.mask[stale], slots * g.milli * g.count, 0)
            self._seen[stale] = s.version[stale]
        return self._capacity

    def short(self) -> list[int]:
        """Indices of the groups whose capacity is below their share of the cluster's free GPU."""
        if not self.groups:
            return []
        totals = self.capacity().sum(axis=0)
        free = float(self.snapshot.gpu_summary()[2].sum())  # kept per node: no pass over every GPU
        return [j for j, g in enumerate(self.groups) if totals[j] < g.share * free]

    def lost(
        self, ctx: RequestContext, nodes: np.ndarray, gpu_after: np.ndarray, short: list[int]
    ) -> np.ndarray:
        """Milli-GPU of the ``short`` groups' capacity that placing ``ctx`` on each of ``nodes`` takes away.

        ``gpu_after`` (len(nodes), G): each node's free shares after the placement.
        """
        s = self.snapshot
        capacity = self.capacity()
        cpu_after = s.cpu_left[nodes] - ctx.request.cpu_milli
        memory_after = s.memory_left[nodes] - ctx.request.memory_mib
        out = np.zeros(len(nodes))
        for j in short:
            g = self.groups[j]
            after = np.where(g.mask[nodes], _slots(g, cpu_after, memory_after, gpu_after), 0)
            out += capacity[nodes, j] - after * g.milli * g.count
        return out
