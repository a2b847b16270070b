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

    def fragmentation(self, cpu_left: np.ndarray, gpu_left: np.ndarray, model_idx: np.ndarray) -> np.ndarray:
        """Expected fragmented milli-GPU of K node states: cpu_left (K,), gpu_left (K, G), model_idx (K,)."""
        idle = gpu_left.sum(axis=1).astype(np.float64)  # (K,)
        if len(self.weight) == 0:
            return np.zeros_like(idle)
        milli = self.gpu_milli[None, :, None]  # (1, T, 1)
        enough = gpu_left[:, None, :] >= milli  # (K, T, G)
        runnable = (
            (enough.sum(axis=2) >= self.gpu_count[None, :])
            & (cpu_left[:, None] >= self.cpu_milli[None, :])
            & self.access[:, model_idx].T  # model_idx -1 picks the "no GPU" column
            & (self.gpu_milli[None, :] > 0)
        )  # (K, T)
        short = np.where(enough, 0, gpu_left[:, None, :]).sum(axis=2)  # (K, T) free milli on too-full GPUs
        per_pod = np.where(runnable, short, idle[:, None])
        return per_pod @ self.weight

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
