"""The FGD packing benchmark: inflate a pod trace to 130% of GPU capacity, shuffle, place once.

Method (the ATC'23 paper's, as the project's data README states it): starting from the trace's
pods, keep drawing pods uniformly at random with replacement and appending copies until the next
one would push the total GPU request above ``tune_ratio`` x capacity; shuffle with the seed; place
pods one at a time (a pod that fits nowhere fails and is not retried, pods never leave). At every
whole percent of arrived GPU request (1..130) record the allocated share of capacity and the
fragmentation rate (fragmented ÷ idle GPU capacity, measured against the typical pods).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from kgpu.scheduling.frag import FragmentationCache, TypicalPods
from kgpu.scheduling.policies import make_framework
from kgpu.scheduling.requests import PodRequest
from kgpu.scheduling.snapshot import ClusterSnapshot, NodeSpec

TUNE_RATIO = 1.3
MAX_PERCENT = 130


def tune_workload(
    pods: Sequence[PodRequest], capacity_milli: int, seed: int, ratio: float = TUNE_RATIO
) -> list[PodRequest]:
    """The trace plus random copies of its pods until the next copy would exceed ``ratio`` x capacity.

    If the trace alone already exceeds the target, pods are dropped from its end instead.
    """
    if not pods:
        raise ValueError("tune_workload: the trace has no pods")
    rng = np.random.default_rng([seed, 0])
    target = ratio * capacity_milli
    tuned = list(pods)
    total = sum(p.total_gpu_milli for p in tuned)
    while total > target and tuned:
        total -= tuned.pop().total_gpu_milli
    if not any(p.total_gpu_milli for p in pods):
        return tuned
    while True:
        pod = pods[int(rng.integers(len(pods)))]
        if total + pod.total_gpu_milli > target:
            return tuned
        tuned.append(pod)
        total += pod.total_gpu_milli


def shuffled(pods: Sequence[PodRequest], seed: int) -> list[PodRequest]:
    order = np.random.default_rng([seed, 1]).permutation(len(pods))
    return [pods[i] for i in order]


def run_packing(
    nodes: Sequence[NodeSpec],
    pods: Sequence[PodRequest],
    policy: str,
    seed: int,
    tune_ratio: float = TUNE_RATIO,
) -> dict[str, object]:
    """One seed of the benchmark; results as a JSON-ready dict."""
    started = time.perf_counter()
    snapshot = ClusterSnapshot(list(nodes))
    capacity = snapshot.capacity_milli
    workload = shuffled(tune_workload(pods, capacity, seed, tune_ratio), seed)
    framework = make_framework(policy, snapshot, workload, rng=np.random.default_rng([seed, 2]))
    # The reported fragmentation rate always uses FGD's view (pod-count typical pods) so policies compare.
    frag = FragmentationCache(TypicalPods.from_requests(workload, snapshot), snapshot)

    allocation: dict[str, float] = {}
    fragmentation: dict[str, float] = {}
    arrived = 0
    failed = 0
    failed_milli = 0
    next_percent = 1
    placement_seconds = 0.0

    def record(upto: int) -> None:
        nonlocal next_percent
        alloc = 100.0 * snapshot.allocated_milli / capacity
        ratio = 100.0 * frag.cluster_ratio()
        while next_percent <= min(upto, MAX_PERCENT):
            allocation[str(next_percent)] = round(alloc, 4)
            fragmentation[str(next_percent)] = round(ratio, 4)
            next_percent += 1

    for pod in workload:
        t0 = time.perf_counter()
        placed = framework.schedule(pod)
        placement_seconds += time.perf_counter() - t0
        if placed is None:
            failed += 1
            failed_milli += pod.total_gpu_milli
        arrived += pod.total_gpu_milli
        reached = int(np.floor(100.0 * arrived / capacity + 1e-9))
        if reached >= next_percent:
            record(reached)
    record(MAX_PERCENT)

    alloc100 = allocation["100"]
    return {
        "policy": policy,
        "seed": seed,
        "nodes": snapshot.num_nodes,
        "capacity_gpus": capacity / 1000,
        "pods": len(workload),
        "pods_failed": failed,
        "failed_gpus": failed_milli / 1000,
        "arrived_pct": round(100.0 * arrived / capacity, 4),
        "allocation_pct_at": allocation,
        "unallocated_gpus_at_100": round(capacity / 1000 * (1 - alloc100 / 100), 2),
        "fragmentation_pct_at": fragmentation,
        "placement_us_per_pod": round(1e6 * placement_seconds / max(1, len(workload)), 2),
        "seconds": round(time.perf_counter() - started, 3),
    }
