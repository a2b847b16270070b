"""Property tests of the snapshot and framework invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kgpu.gpu.catalog import get_model
from kgpu.scheduling import ClusterSnapshot, NodeSpec, PodRequest, make_framework
from kgpu.scheduling.policies import POLICIES

POLICY_NAMES = [p for p in POLICIES if p not in ("fgd", "kgpu")] + ["fgd", "kgpu"]

share_requests = st.builds(
    PodRequest,
    cpu_milli=st.integers(0, 8000),
    memory_mib=st.integers(0, 8192),
    gpu_count=st.just(1),
    gpu_milli=st.integers(1, 1000),
)
whole_requests = st.builds(
    PodRequest,
    cpu_milli=st.integers(0, 8000),
    memory_mib=st.integers(0, 8192),
    gpu_count=st.integers(1, 4),
    gpu_milli=st.just(1000),
)
cpu_requests = st.builds(PodRequest, cpu_milli=st.integers(0, 8000), memory_mib=st.integers(0, 8192))
requests = st.one_of(share_requests, whole_requests, cpu_requests)


def small_cluster() -> ClusterSnapshot:
    return ClusterSnapshot(
        [
            NodeSpec("a", 32000, 65536, 4, "T4"),
            NodeSpec("b", 16000, 32768, 2, "V100M32"),
            NodeSpec("c", 64000, 131072, 8, "A100-80GB"),
        ]
    )


@settings(max_examples=40, deadline=None)
@given(st.lists(requests, min_size=1, max_size=40), st.sampled_from(POLICY_NAMES), st.integers(0, 3))
def test_shares_never_exceed_one_gpu(reqs: list[PodRequest], policy: str, seed: int) -> None:
    snapshot = small_cluster()
    framework = make_framework(policy, snapshot, reqs, rng=np.random.default_rng(seed))
    for request in reqs:
        framework.schedule(request)
        assert (snapshot.gpu_left >= 0).all()
        assert (snapshot.gpu_left <= 1000).all()
        assert (snapshot.cpu_left >= 0).all() and (snapshot.memory_left >= 0).all()


@settings(max_examples=40, deadline=None)
@given(requests, st.sampled_from(POLICY_NAMES))
def test_request_that_fits_an_empty_node_is_never_refused_there(request: PodRequest, policy: str) -> None:
    snapshot = ClusterSnapshot([NodeSpec("only", 16000, 16384, 4, "T4")])
    framework = make_framework(policy, snapshot, [request])
    placement = framework.schedule(request)
    assert placement is not None and placement.node_name == "only"


@settings(max_examples=40, deadline=None)
@given(st.lists(requests, min_size=1, max_size=25), requests, st.sampled_from(POLICY_NAMES))
def test_unreserve_restores_the_snapshot_exactly(
    before: list[PodRequest], last: PodRequest, policy: str
) -> None:
    snapshot = small_cluster()
    framework = make_framework(policy, snapshot, [*before, last])
    for request in before:
        framework.schedule(request)
    state = snapshot.state()
    placement = framework.schedule(last)
    if placement is None:
        return
    framework.unreserve(placement, last)
    after = snapshot.state()
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            assert np.array_equal(value, after[key]), key
        else:
            assert value == after[key], key


mig_profiles = st.sampled_from([p.name for p in get_model("H200-141GB").mig_profiles])


@settings(max_examples=60, deadline=None)
@given(st.lists(mig_profiles, min_size=1, max_size=20))
def test_mig_placements_never_overlap_nor_exceed_counts(profiles: list[str]) -> None:
    snapshot = ClusterSnapshot([NodeSpec("h", 64000, 262144, 2, "H200-141GB", sharing="mig")])
    framework = make_framework("best-fit", snapshot)
    model = get_model("H200-141GB")
    for name in profiles:
        framework.schedule(PodRequest(mig_profile=name))
    for (_, _gpu), instances in snapshot.mig_instances.items():
        used = 0
        for profile, start, size in instances:
            bits = ((1 << size) - 1) << start
            assert not used & bits, "overlapping MIG instances"
            used |= bits
            assert start in model.mig_profile(profile).starts and start + size <= 8
        for profile in {p for p, _, _ in instances}:
            assert sum(1 for p, _, _ in instances if p == profile) <= model.mig_profile(profile).max_count
        assert sum(model.mig_profile(p).compute_slices for p, _, _ in instances) <= 7


@settings(max_examples=30, deadline=None)
@given(st.lists(requests, min_size=1, max_size=40), st.integers(0, 3))
def test_kept_summaries_equal_a_recount_after_any_placements(reqs: list[PodRequest], seed: int) -> None:
    # The per-node GPU summaries and kgpu's free-share histogram are updated from changed nodes only;
    # after reserves and unreserves they must equal counting everything again.
    snapshot = small_cluster()
    framework = make_framework("kgpu", snapshot, reqs, rng=np.random.default_rng(seed))
    plugin = framework.scores[0][0]
    placed = []
    for i, request in enumerate(reqs):
        placement = framework.schedule(request)
        if placement is not None:
            placed.append((placement, request))
        if i % 3 == 2 and placed:
            framework.unreserve(*placed.pop(0))
        free_gpus, largest, idle = snapshot.gpu_summary()
        left = snapshot.gpu_left
        assert free_gpus.tolist() == (left == 1000).sum(axis=1).tolist()
        assert largest.tolist() == left.max(axis=1).tolist()
        assert idle.tolist() == left.sum(axis=1).tolist()
        assert (
            plugin.gap_counts().tolist() == plugin._gap_histogram(left, snapshot.gpu_capacity_milli).tolist()
        )


def per_pod_fragmentation(
    typical, cpu_left: np.ndarray, gpu_left: np.ndarray, model_idx: np.ndarray
) -> np.ndarray:
    """FGD's definition written out per typical pod and GPU (the artifact's loop, vectorised plainly)."""
    idle = gpu_left.sum(axis=1).astype(np.float64)
    enough = gpu_left[:, None, :] >= typical.gpu_milli[None, :, None]
    runnable = (
        (enough.sum(axis=2) >= typical.gpu_count[None, :])
        & (cpu_left[:, None] >= typical.cpu_milli[None, :])
        & typical.access[:, model_idx].T
        & (typical.gpu_milli[None, :] > 0)
    )
    short = np.where(enough, 0, gpu_left[:, None, :]).sum(axis=2)
    return np.ascontiguousarray(np.where(runnable, short, idle[:, None])) @ typical.weight


@settings(max_examples=30, deadline=None)
@given(
    st.lists(requests, min_size=1, max_size=30),
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 10), st.integers(0, 64000)), min_size=1, max_size=20
    ),
    st.booleans(),
)
def test_fragmentation_by_request_level_equals_the_per_pod_definition(
    reqs: list[PodRequest], states: list[tuple[int, int, int]], by_gpu: bool
) -> None:
    from kgpu.scheduling.frag import TypicalPods

    snapshot = small_cluster()
    try:
        typical = TypicalPods.from_requests(reqs, snapshot, weight_by_gpu=by_gpu)
    except ValueError:  # no GPU request to weigh by
        return
    nodes = np.array([n for n, _, _ in states])
    rng = np.random.default_rng(len(states))
    gpu_left = np.minimum(snapshot.gpu_capacity_milli[nodes], rng.integers(0, 11, size=(len(nodes), 8)) * 100)
    gpu_left[:, 0] = np.minimum(snapshot.gpu_capacity_milli[nodes, 0], [s * 100 for _, s, _ in states])
    cpu_left = np.array([c for _, _, c in states])
    got = typical.fragmentation(cpu_left, gpu_left, snapshot.model_idx[nodes])
    assert (
        got.tolist() == per_pod_fragmentation(typical, cpu_left, gpu_left, snapshot.model_idx[nodes]).tolist()
    )


pinned_requests = st.one_of(share_requests, whole_requests).map(
    lambda r: PodRequest(
        cpu_milli=r.cpu_milli,
        memory_mib=r.memory_mib,
        gpu_count=min(r.gpu_count, 2),
        gpu_milli=r.gpu_milli,
        gpu_models=("V100M32",),
    )
)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(requests, pinned_requests), min_size=1, max_size=40), st.integers(0, 3))
def test_kept_pool_capacity_equals_a_recount_after_any_placements(reqs: list[PodRequest], seed: int) -> None:
    # Pods pinned to the 2-GPU V100 node form a restricted group; its per-node capacity is updated
    # from changed nodes only and must equal counting every node again.
    from kgpu.scheduling.pools import PoolReserve

    snapshot = small_cluster()
    framework = make_framework("kgpu", snapshot, reqs, rng=np.random.default_rng(seed))
    pools = framework.scores[0][0].pools
    placed = []
    for i, request in enumerate(reqs):
        placement = framework.schedule(request)
        if placement is not None:
            placed.append((placement, request))
        if i % 3 == 2 and placed:
            framework.unreserve(*placed.pop(0))
        recount = PoolReserve(snapshot, pools.groups).capacity()
        assert pools.capacity().tolist() == recount.tolist()
        assert pools.short() == PoolReserve(snapshot, pools.groups).short()


def test_kept_gpu_summaries_cannot_be_written_by_their_readers() -> None:
    import pytest

    snapshot = small_cluster()
    free_gpus, _, idle = snapshot.gpu_summary()
    with pytest.raises(ValueError, match="read-only"):
        free_gpus[0] = 0
    with pytest.raises(ValueError, match="read-only"):
        idle += 1
    assert snapshot.gpu_summary()[0].tolist() == [4, 2, 8]
