"""GPU fragmentation measured against a workload's typical pods (Weng et al., USENIX ATC'23, "FGD").

For one node and one typical pod: if the pod cannot run there at all (no GPU of an allowed model,
too little CPU, or too few GPUs with enough free share) every idle milli-GPU on the node is
fragmented for it; if it can, the GPUs whose free share is below the pod's per-GPU request are.
A CPU-only typical pod counts all idle GPU as fragmented (the paper's artifact does the same). The
node's fragmentation is the expectation over the typical-pod distribution. Memory does not enter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot

# The artifact's settings: typical pods are the most popular request shapes covering 95% of the pods.
POPULARITY_THRESHOLD = 0.95


@dataclass(frozen=True)
class TypicalPods:
    """The workload's request distribution, as arrays (T typical shapes)."""

    cpu_milli: np.ndarray  # (T,)
    gpu_milli: np.ndarray  # (T,) per GPU; 0 for CPU-only pods
    gpu_count: np.ndarray  # (T,)
    weight: np.ndarray  # (T,) probabilities summing to 1
    access: np.ndarray  # (T, M + 1) may this shape use snapshot model m (last column: no GPU)

    @classmethod
    def from_requests(
        cls,
        requests: Iterable[PodRequest],
        snapshot: ClusterSnapshot,
        threshold: float = POPULARITY_THRESHOLD,
        weight_by_gpu: bool = False,
    ) -> TypicalPods:
        """Most popular shapes until ``threshold`` of the pods are covered, renormalized.

        With ``weight_by_gpu`` each shape counts by the GPU it requests rather than by pods (a CPU
        pod then counts for nothing), which is kgpu's view: what fragmentation costs is GPUs.
        """
        counts: Counter[tuple[int, int, int, tuple[str, ...]]] = Counter()
        for r in requests:
            if r.kind not in ("none", "whole", "share"):
                continue
            key = (r.cpu_milli, r.gpu_milli, r.gpu_count, r.gpu_models)
            counts[key] += r.total_gpu_milli / 1000 if weight_by_gpu else 1
        counts = Counter({k: v for k, v in counts.items() if v > 0})
        if not counts:
            raise ValueError("typical pods: the workload has no pods to learn a distribution from")
        total = sum(counts.values())
        # Decreasing count; ties in a fixed order (cpu, milli, count, models) as the artifact does.
        ordered = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        chosen, covered = [], 0.0
        for key, count in ordered:
            if covered >= threshold * total:
                break
            chosen.append((key, count))
            covered += count
        m = len(snapshot.models)
        access = np.zeros((len(chosen), m + 1), dtype=bool)
        for t, ((_, milli, _, models), _) in enumerate(chosen):
            if milli == 0 or not models:
                access[t, :m] = True
            else:
                for name in models:
                    idx = snapshot.model_index(name)
                    if idx is not None:
                        access[t, idx] = True
        return cls(
            cpu_milli=np.array([k[0] for k, _ in chosen], dtype=np.int64),
            gpu_milli=np.array([k[1] for k, _ in chosen], dtype=np.int64),
            gpu_count=np.array([k[2] for k, _ in chosen], dtype=np.int64),
            weight=np.array([c for _, c in chosen], dtype=np.float64) / covered,
            access=access,
        )

    @cached_property
    def _levels(self) -> tuple[np.ndarray, np.ndarray]:
        """The distinct per-GPU requests, and each typical pod's index among them."""
        levels, level_of = np.unique(self.gpu_milli, return_inverse=True)
        return levels, level_of

    @cached_property
    def _access_by_model(self) -> np.ndarray:
        """(M + 1, T) may each typical pod use a GPU of model m (a CPU-only typical pod never does:
        it counts all idle GPU); row-major so that a node's row is contiguous."""
        return np.ascontiguousarray((self.access & (self.gpu_milli > 0)[:, None]).T)

    def fragmentation(self, cpu_left: np.ndarray, gpu_left: np.ndarray, model_idx: np.ndarray) -> np.ndarray:
        """Expected fragmented milli-GPU of K node states: cpu_left (K,), gpu_left (K, G), model_idx (K,)."""
        idle = gpu_left.sum(axis=1)  # (K,)
        if len(self.weight) == 0:
            return np.zeros(len(idle))
        # Typical pods share few per-GPU requests ("levels"). Each GPU meets the levels up to its free
        # share; a histogram per node of the highest level met gives, per level, the GPUs with enough
        # free and their free milli (summed from the top level down), looked up per typical pod.
        # Same values as comparing every GPU with every pod, in O(K x G) instead of O(K x G x T).
        levels, level_of = self._levels
        k, width = len(idle), len(levels) + 1
        met = np.searchsorted(levels, gpu_left, side="right")  # (K, G): levels 0..met-1 fit
        bins = (np.arange(k)[:, None] * width + met).ravel()
        gpus = np.bincount(bins, minlength=k * width).reshape(k, width)
        milli = np.bincount(bins, weights=gpu_left.ravel(), minlength=k * width).reshape(k, width)
        # from level l up: GPUs meeting at least level l; column l + 1 of the top-down sums
        count = np.cumsum(gpus[:, ::-1], axis=1)[:, ::-1][:, 1:][:, level_of]  # (K, T)
        short = idle[:, None] - np.cumsum(milli[:, ::-1], axis=1)[:, ::-1][:, 1:][:, level_of]
        runnable = (
            (count >= self.gpu_count[None, :])
            & (cpu_left[:, None] >= self.cpu_milli[None, :])
            & self._access_by_model[model_idx]  # model_idx -1 picks the "no GPU" row
        )  # (K, T)
        # Row-major, as BLAS then sums each node's row in one fixed order (a column-major matrix
        # gives other last bits, and near-ties between nodes would change placements).
        per_pod = np.where(runnable, short, idle[:, None].astype(np.float64))
        return np.ascontiguousarray(per_pod) @ self.weight

    def node_fragmentation(self, snapshot: ClusterSnapshot, nodes: np.ndarray | None = None) -> np.ndarray:
        idx = np.arange(snapshot.num_nodes) if nodes is None else nodes
        return self.fragmentation(snapshot.cpu_left[idx], snapshot.gpu_left[idx], snapshot.model_idx[idx])


class FragmentationCache:
    """Per-node fragmentation, recomputed only for nodes whose version changed."""

    def __init__(self, typical: TypicalPods, snapshot: ClusterSnapshot) -> None:
        self.typical = typical
        self.snapshot = snapshot
        self.values = np.zeros(snapshot.num_nodes)
        self.seen = np.full(snapshot.num_nodes, -1, dtype=np.int64)

    def get(self, nodes: np.ndarray | None = None) -> np.ndarray:
        s = self.snapshot
        idx = np.arange(s.num_nodes) if nodes is None else nodes
        stale = idx[self.seen[idx] != s.version[idx]]
        if len(stale):
            self.values[stale] = self.typical.node_fragmentation(s, stale)
            self.seen[stale] = s.version[stale]
        return self.values[idx]

    def cluster_ratio(self) -> float:
        """Fragmented ÷ idle GPU capacity of the whole cluster (0 when nothing is idle)."""
        idle = float(self.snapshot.gpu_left.sum())
        return float(self.get().sum()) / idle if idle > 0 else 0.0
