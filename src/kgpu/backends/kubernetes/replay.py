"""Replay a packing workload (``kgpu sim pack``'s) against a Kubernetes API with the kgpu scheduler.

The trace's nodes and pods become Node and Pod objects; the scheduler places them through the API
(watches, Binding API) exactly as it would on a cluster; the allocation is then read back from
the API: the GPU that bound pods hold over the nodes' GPU capacity. Used by the tests and by
``bench/k8s_scheduler_replay.py`` against the in-repo API server double.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from kgpu.backends.kubernetes.cluster_view import node_object, pod_object, pod_request
from kgpu.backends.kubernetes.scheduler import KgpuScheduler
from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import NodeSpec
from kgpu.sim.packing import shuffled, tune_workload


def packing_workload(nodes: Sequence[NodeSpec], pods: Sequence[PodRequest], seed: int) -> list[PodRequest]:
    """The same workload ``kgpu sim pack`` places for this seed: tuned to 130% of capacity, shuffled."""
    capacity = sum(n.gpu_count for n in nodes) * 1000
    return shuffled(tune_workload(pods, capacity, seed), seed)


def trace_objects(
    nodes: Sequence[NodeSpec], workload: Sequence[PodRequest], namespace: str = "replay"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Node objects, and Pod objects named in arrival order (the scheduler's queue order)."""
    width = len(str(len(workload)))
    return (
        [node_object(n) for n in nodes],
        [pod_object(r, f"pod-{i:0{width}d}", namespace) for i, r in enumerate(workload)],
    )


def place_pending(scheduler: KgpuScheduler, idle_s: float = 0.3, timeout_s: float = 600.0) -> float:
    """Run the scheduler's loop until no pod is left to try for ``idle_s``; returns the busy seconds."""
    started = last = time.perf_counter()
    deadline = started + timeout_s
    while time.perf_counter() < deadline:
        if scheduler.schedule_one(timeout_s=0.05) is not None:
            last = time.perf_counter()
        elif time.perf_counter() - last >= idle_s:
            break
    return last - started


def allocation_pct(nodes: Sequence[NodeSpec], pods: Sequence[dict[str, Any]]) -> float:
    """GPU held by bound pods over the nodes' GPU capacity, in percent (as the packing benchmark counts)."""
    capacity = sum(n.gpu_count for n in nodes) * 1000
    held = sum(pod_request(p).total_gpu_milli for p in pods if (p.get("spec") or {}).get("nodeName"))
    return 100.0 * held / capacity
