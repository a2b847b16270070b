"""Filter plugins: each returns, for every node at once, whether the request may go there."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from kgpu.gpu.catalog import MigProfile
from kgpu.gpu.mig import MIG_COMPUTE_SLICES, MIG_MEMORY_SLICES
from kgpu.scheduling.context import RequestContext
from kgpu.scheduling.snapshot import ClusterSnapshot


class FilterPlugin(Protocol):
    name: str

    def filter(self, ctx: RequestContext) -> np.ndarray:
        """Boolean mask over all nodes."""
        ...


class NodeResourcesFit:
    """CPU and memory requests fit what is left on the node."""

    name = "NodeResourcesFit"

    def filter(self, ctx: RequestContext) -> np.ndarray:
        s = ctx.snapshot
        return (s.cpu_left >= ctx.request.cpu_milli) & (s.memory_left >= ctx.request.memory_mib)


class GpuModelMatch:
    """The node's GPU model is one the request allows (requests without a GPU pass everywhere)."""

    name = "GpuModelMatch"

    def filter(self, ctx: RequestContext) -> np.ndarray:
        return ctx.model_mask


def mig_start_on_gpu(snapshot: ClusterSnapshot, node: int, gpu: int, profile: MigProfile) -> int | None:
    """First free start for ``profile`` on one MIG GPU, honouring max count and compute slices."""
    instances = snapshot.mig_instances.get((node, gpu), [])
    if sum(1 for name, _, _ in instances if name == profile.name) >= profile.max_count:
        return None
    model = snapshot.models[int(snapshot.model_idx[node])]
    compute = sum(model.mig_profile(name).compute_slices for name, _, _ in instances)
    if compute + profile.compute_slices > MIG_COMPUTE_SLICES:
        return None
    used = int(snapshot.mig_used_mask[node, gpu])
    for start in profile.starts:
        if start + profile.memory_slices > MIG_MEMORY_SLICES:
            continue
        bits = ((1 << profile.memory_slices) - 1) << start
        if not used & bits:
            return start
    return None


class GpuFit:
    """The GPU part fits: N fully free GPUs, one GPU with the share free, a time slice, or a MIG start."""

    name = "GpuFit"

    def filter(self, ctx: RequestContext) -> np.ndarray:
        s = ctx.snapshot
        kind = ctx.kind
        if kind == "none":
            return np.ones(s.num_nodes, dtype=bool)
        if kind in ("whole", "share", "memory-share"):
            free_gpus, largest_share, _ = s.gpu_summary()
            if kind == "whole":
                return free_gpus >= ctx.gpu_count
            return largest_share >= ctx.need_milli
        if kind == "time-slice":
            return (s.time_slice_used < s.time_slice_capacity).any(axis=1)
        # MIG: few nodes have MIG GPUs, so a plain loop over them is cheap.
        mask = np.zeros(s.num_nodes, dtype=bool)
        for node in np.flatnonzero(s.mig_capable.any(axis=1) & ctx.model_allowed):
            profile = ctx.mig_profile_for(int(s.model_idx[node]))
            if profile is None:
                continue
            for gpu in np.flatnonzero(s.mig_capable[node]):
                if mig_start_on_gpu(s, int(node), int(gpu), profile) is not None:
                    mask[node] = True
                    break
        return mask


DEFAULT_FILTERS: tuple[FilterPlugin, ...] = (NodeResourcesFit(), GpuModelMatch(), GpuFit())
