"""The scheduler's view of a cluster: per node CPU and memory, per GPU its free share, MIG and time slices.

State lives in numpy arrays (one row per node, one column per GPU slot) so that filters and scores
run over all nodes at once. Every change bumps the node's version from one global counter, so
caches keyed on (node, version) are never fooled by a reserve followed by an unreserve.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from kgpu.gpu.catalog import GPUModel, get_model
from kgpu.gpu.mig import MIG_MEMORY_SLICES
from kgpu.scheduling.requests import MILLI

SHARING_MODES = ("exclusive", "time-slicing", "mig")


@dataclass(frozen=True)
class NodeSpec:
    """One node as the scheduler sees it; ``sharing`` applies to all its GPUs."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpu_count: int = 0
    gpu_model: str | None = None
    sharing: str = "exclusive"
    time_slice_replicas: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    # The model itself when the catalog does not know it (a GPU found on a local machine).
    model_spec: GPUModel | None = None

    def __post_init__(self) -> None:
        if self.sharing not in SHARING_MODES:
            raise ValueError(
                f"{self.name}: sharing must be one of {', '.join(SHARING_MODES)}, got {self.sharing!r}"
            )
        if self.gpu_count and not self.gpu_model:
            raise ValueError(f"{self.name}: gpu_model is required when gpu_count > 0")
        if self.sharing == "time-slicing" and self.time_slice_replicas < 2:
            raise ValueError(f"{self.name}: time-slicing needs time_slice_replicas >= 2 (device plugin rule)")
        if self.cpu_milli < 0 or self.memory_mib < 0 or self.gpu_count < 0:
            raise ValueError(f"{self.name}: cpu_milli, memory_mib and gpu_count must not be negative")


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


class ClusterSnapshot:
    """Mutable placement state of a set of nodes."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        if not nodes:
            raise ValueError("a snapshot needs at least one node")
        self.nodes = list(nodes)
        n = len(nodes)
        g = max(1, max(spec.gpu_count for spec in nodes))
        self.max_gpus = g
        self.models: list[GPUModel] = []
        model_index: dict[str, int] = {}
        self.model_idx = np.full(n, -1, dtype=np.int64)
        for i, spec in enumerate(nodes):
            if spec.gpu_count:
                model = spec.model_spec or get_model(spec.gpu_model or "")
                if model.name not in model_index:
                    model_index[model.name] = len(self.models)
                    self.models.append(model)
                self.model_idx[i] = model_index[model.name]
        self._model_index = model_index
        self.model_memory_mib = np.array(
            [m.memory_gib * 1024 if m.memory_known else 0 for m in self.models] + [0], dtype=np.int64
        )
        self.cpu_capacity = np.array([s.cpu_milli for s in nodes], dtype=np.int64)
        self.memory_capacity = np.array([s.memory_mib for s in nodes], dtype=np.int64)
        self.gpu_count = np.array([s.gpu_count for s in nodes], dtype=np.int64)
        self.gpu_present = np.arange(g)[None, :] < self.gpu_count[:, None]
        sharing = np.array([s.sharing for s in nodes])
        self.mig_capable = self.gpu_present & (sharing == "mig")[:, None]
        self.time_slice_capacity = np.where(
            self.gpu_present & (sharing == "time-slicing")[:, None],
            np.array([s.time_slice_replicas for s in nodes], dtype=np.int64)[:, None],
            0,
        )
        # Whole GPUs and milli shares only use GPUs in exclusive mode.
        self.gpu_capacity_milli = np.where(
            self.gpu_present & (sharing == "exclusive")[:, None], MILLI, 0
        ).astype(np.int64)
        self.capacity_per_node_milli = self.gpu_capacity_milli.sum(axis=1)
        self.version = np.zeros(n, dtype=np.int64)
        self._clock = 0
        # Per-node summaries of gpu_left, refreshed only for nodes whose version moved (see gpu_summary).
        self._free_gpus = np.zeros(n, dtype=np.int64)
        self._largest_share = np.zeros(n, dtype=np.int64)
        self._idle_milli = np.zeros(n, dtype=np.int64)
        self._summary_seen = np.full(n, -1, dtype=np.int64)
        self.reset()

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to an empty cluster."""
        self.cpu_left = self.cpu_capacity.copy()
        self.memory_left = self.memory_capacity.copy()
        self.gpu_left = self.gpu_capacity_milli.copy()
        self.mig_used_mask = np.zeros_like(self.gpu_left)  # bit s set: memory slice s is taken
        self.mig_instances: dict[tuple[int, int], list[tuple[str, int, int]]] = {}
        self.time_slice_used = np.zeros_like(self.gpu_left)
        self._touch(np.arange(len(self.nodes)))

    def _touch(self, nodes: np.ndarray | int) -> None:
        self._clock += 1
        self.version[nodes] = self._clock

    def gpu_summary(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per node: whole free GPUs, the largest free share, idle milli-GPU (sum of free shares).

        Reductions along the short GPU axis cost about as much per call as the whole cycle of a
        small cluster, and a placement changes one node: rows are recomputed only where the
        node's version moved since the last call. Read-only views (a write would make them drift).
        """
        stale = np.flatnonzero(self._summary_seen != self.version)
        if len(stale):
            left = self.gpu_left[stale]
            self._free_gpus[stale] = (left == MILLI).sum(axis=1)
            self._largest_share[stale] = left.max(axis=1)
            self._idle_milli[stale] = left.sum(axis=1)
            self._summary_seen[stale] = self.version[stale]
        return _read_only(self._free_gpus), _read_only(self._largest_share), _read_only(self._idle_milli)

    @property
    def num_nodes(self) -> int:
        return len(self.nodes)

    @property
    def capacity_milli(self) -> int:
        return int(self.gpu_capacity_milli.sum())

    @property
    def allocated_milli(self) -> int:
        return int(self.gpu_capacity_milli.sum() - self.gpu_left.sum())

    def model_index(self, name: str) -> int | None:
        """Index of a catalog model in this snapshot (aliases accepted), or None if no node has it."""
        try:
            return self._model_index.get(get_model(name).name)
        except KeyError:
            return None

    def state(self) -> dict[str, object]:
        """A comparable copy of everything placements change (versions excluded)."""
        return {
            "cpu_left": self.cpu_left.copy(),
            "memory_left": self.memory_left.copy(),
            "gpu_left": self.gpu_left.copy(),
            "mig_used_mask": self.mig_used_mask.copy(),
            "mig_instances": {k: list(v) for k, v in self.mig_instances.items() if v},
            "time_slice_used": self.time_slice_used.copy(),
        }

    # -- reserve / unreserve ------------------------------------------------------------------
    def apply(self, placement: Placement, sign: int) -> None:
        """Take (sign=+1) or give back (sign=-1) the resources of ``placement``."""
        n = placement.node
        self.cpu_left[n] -= sign * placement.cpu_milli
        self.memory_left[n] -= sign * placement.memory_mib
        for gpu in placement.gpus:
            if placement.kind == "mig":
                bits = ((1 << placement.mig_size) - 1) << placement.mig_start
                key = (n, gpu)
                if sign > 0:
                    self.mig_used_mask[n, gpu] |= bits
                    self.mig_instances.setdefault(key, []).append(
                        (placement.mig_profile or "", placement.mig_start, placement.mig_size)
                    )
                else:
                    self.mig_used_mask[n, gpu] &= ~bits & ((1 << MIG_MEMORY_SLICES) - 1)
                    self.mig_instances[key].remove(
                        (placement.mig_profile or "", placement.mig_start, placement.mig_size)
                    )
                    if not self.mig_instances[key]:
                        del self.mig_instances[key]
            elif placement.kind == "time-slice":
                self.time_slice_used[n, gpu] += sign
            else:
                self.gpu_left[n, gpu] -= sign * placement.milli_per_gpu
        self._touch(n)


@dataclass(frozen=True)
class Placement:
    """Where one request went: a node, its GPU indices, and what it took there."""

    node: int
    node_name: str
    kind: str
    gpus: tuple[int, ...] = ()
    milli_per_gpu: int = 0
    cpu_milli: int = 0
    memory_mib: int = 0
    mig_profile: str | None = None
    mig_start: int = 0
    mig_size: int = 0

    @property
    def gpu_milli(self) -> int:
        return self.milli_per_gpu * len(self.gpus) if self.kind in ("whole", "share", "memory-share") else 0

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {"node": self.node_name, "kind": self.kind, "gpus": list(self.gpus)}
        if self.kind in ("whole", "share", "memory-share"):
            data["milli_per_gpu"] = self.milli_per_gpu
        if self.kind == "mig":
            data.update(profile=self.mig_profile, start=self.mig_start, size=self.mig_size)
        return data
