"""Each policy's choice on small hand-made clusters, and the request forms the framework understands."""

from __future__ import annotations

import numpy as np
import pytest

from kgpu.scheduling import ClusterSnapshot, NodeSpec, PodRequest, make_framework
from kgpu.scheduling.frag import TypicalPods
from kgpu.scheduling.framework import Framework
from kgpu.scheduling.policies import FragmentationGpuSelector, KgpuScore


def two_nodes() -> ClusterSnapshot:
    return ClusterSnapshot([NodeSpec("n0", 32000, 65536, 2, "T4"), NodeSpec("n1", 32000, 65536, 2, "T4")])


def test_best_fit_prefers_the_fuller_node() -> None:
    snapshot = two_nodes()
    fw = make_framework("best-fit", snapshot)
    fw.reserve(fw.placement_on(fw.context(PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=1000)), 1))
    assert fw.schedule(PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=500)).node_name == "n1"


def test_gpu_packing_uses_a_shared_gpu_before_a_free_one() -> None:
    snapshot = two_nodes()
    fw = make_framework("gpu-packing", snapshot)
    first = fw.schedule(PodRequest(gpu_count=1, gpu_milli=300))
    second = fw.schedule(PodRequest(gpu_count=1, gpu_milli=300))
    assert (second.node, second.gpus) == (first.node, first.gpus)


def test_best_fit_gpu_selector_picks_the_fullest_gpu_that_fits() -> None:
    snapshot = ClusterSnapshot([NodeSpec("n", 32000, 65536, 3, "T4")])
    snapshot.gpu_left[0] = [1000, 400, 700]
    fw = make_framework("best-fit", snapshot)
    assert fw.schedule(PodRequest(gpu_count=1, gpu_milli=350)).gpus == (1,)
    assert fw.schedule(PodRequest(gpu_count=1, gpu_milli=500)).gpus == (2,)


def test_gpu_clustering_groups_pods_of_the_same_kind() -> None:
    snapshot = two_nodes()
    fw = make_framework("gpu-clustering", snapshot)
    share = fw.schedule(PodRequest(gpu_count=1, gpu_milli=200))
    whole = PodRequest(gpu_count=1, gpu_milli=1000)
    # n(share) has the "share" tag; a whole-GPU pod goes to the idle node, the next share joins the first.
    assert fw.schedule(whole).node != share.node
    assert fw.schedule(PodRequest(gpu_count=1, gpu_milli=200)).node == share.node


def test_dot_product_prefers_the_node_whose_free_resources_align_least() -> None:
    snapshot = ClusterSnapshot(
        [NodeSpec("big", 64000, 65536, 8, "T4"), NodeSpec("small", 8000, 65536, 1, "T4")]
    )
    fw = make_framework("dot-product", snapshot)
    assert fw.schedule(PodRequest(cpu_milli=4000, gpu_count=1, gpu_milli=1000)).node_name == "small"


def test_fgd_keeps_a_whole_gpu_free_for_whole_gpu_typical_pods() -> None:
    # Typical pods: mostly whole GPUs. A 0.5 share should join the half-used GPU, not break a free one.
    snapshot = ClusterSnapshot([NodeSpec("n0", 32000, 65536, 2, "T4"), NodeSpec("n1", 32000, 65536, 2, "T4")])
    workload = [PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=1000)] * 9 + [
        PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=500)
    ]
    for policy in ("fgd", "kgpu"):
        snapshot.reset()
        snapshot.gpu_left[1] = [500, 1000]
        snapshot.version[:] += 1
        fw = make_framework(policy, snapshot, workload)
        placed = fw.schedule(PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=500))
        assert (placed.node_name, placed.gpus) == ("n1", (0,)), policy


def test_fragmentation_of_a_node_against_typical_pods() -> None:
    snapshot = ClusterSnapshot([NodeSpec("n", 32000, 65536, 2, "T4")])
    typical = TypicalPods.from_requests(
        [PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=600)] * 2, snapshot
    )
    # GPU 0 has 500 free: below 600, so fragmented; GPU 1 has 1000 free: usable.
    frag = typical.fragmentation(np.array([32000]), np.array([[500, 1000]]), np.array([0]))
    assert frag.tolist() == [500.0]
    # No CPU left: the pod cannot run, so every idle milli-GPU counts.
    frag = typical.fragmentation(np.array([0]), np.array([[500, 1000]]), np.array([0]))
    assert frag.tolist() == [1500.0]


def test_model_constraint_and_memory_share() -> None:
    snapshot = ClusterSnapshot(
        [NodeSpec("t4", 32000, 65536, 1, "T4"), NodeSpec("v", 32000, 65536, 1, "V100M32")]
    )
    fw = make_framework("best-fit", snapshot)
    assert fw.schedule(PodRequest(gpu_count=1, gpu_milli=1000, gpu_models=("V100-32GB",))).node_name == "v"
    assert fw.schedule(PodRequest(gpu_count=1, gpu_milli=1000, gpu_models=("V100M32",))) is None
    placed = fw.schedule(PodRequest(gpu_count=1, gpu_memory_mib=8192))  # half of a 16 GiB T4
    assert (placed.node_name, placed.milli_per_gpu) == ("t4", 500)


def test_time_slices_fill_up_to_the_replica_count() -> None:
    snapshot = ClusterSnapshot(
        [NodeSpec("ts", 32000, 65536, 1, "L4", sharing="time-slicing", time_slice_replicas=3)]
    )
    fw = make_framework("best-fit", snapshot)
    assert [fw.schedule(PodRequest(time_slice=True)) is not None for _ in range(4)] == [
        True,
        True,
        True,
        False,
    ]
    assert (
        fw.schedule(PodRequest(gpu_count=1, gpu_milli=1000)) is None
    )  # time-sliced GPUs are not handed out whole


def test_mig_geometry_refuses_what_does_not_fit() -> None:
    snapshot = ClusterSnapshot([NodeSpec("h", 64000, 262144, 1, "H200-141GB", sharing="mig")])
    fw = make_framework("best-fit", snapshot)
    assert fw.schedule(PodRequest(mig_profile="3g.71gb")).mig_start == 0
    assert fw.schedule(PodRequest(mig_profile="3g.71gb")).mig_start == 4
    assert fw.schedule(PodRequest(mig_profile="1g.18gb")) is None  # 3g + 3g fill all memory slices
    assert fw.schedule(PodRequest(mig_profile="9g.1tb")) is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"gpu_count": 2, "gpu_milli": 500}, "share of one GPU"),
        ({"gpu_count": 1, "gpu_milli": 0}, "gpu_milli"),
        ({"cpu_milli": -1}, "cpu_milli"),
        ({"gpu_count": 1, "gpu_milli": 1000, "time_slice": True}, "one GPU form"),
    ],
)
def test_bad_requests_name_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PodRequest(**kwargs)


def test_unknown_policy_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known policies: random"):
        make_framework("worst-fit", two_nodes())


def _kgpu(
    snapshot: ClusterSnapshot, workload: list[PodRequest], protect: bool = True, pools: bool = True
) -> Framework:
    plugin = KgpuScore.for_workload(workload, snapshot)
    if not protect:
        plugin.protect_gpus = None
    if not pools:
        plugin.pools = None
    return Framework(snapshot, [(plugin, 1.0)], selector=FragmentationGpuSelector(plugin), name="kgpu")


def test_kgpu_sends_a_cpu_heavy_pod_to_the_cpu_rich_node_fgd_does_not() -> None:
    # A GPU-dense node (12 CPUs per GPU, what its whole-GPU pods need) before a CPU-rich one. FGD looks at
    # one typical pod at a time: 64 CPUs left still run a 12-CPU pod, so both nodes tie and the first wins,
    # leaving 8 GPUs with CPU for about 5. kgpu counts the GPUs the node could no longer feed.
    def place(policy: str) -> str:
        snapshot = ClusterSnapshot(
            [NodeSpec("dense", 96000, 393216, 8, "G2"), NodeSpec("rich", 104000, 524288, 2, "T4")]
        )
        workload = [PodRequest(cpu_milli=12000, memory_mib=49152, gpu_count=1, gpu_milli=1000)] * 8 + [
            PodRequest(cpu_milli=32000, memory_mib=65536)
        ] * 2
        return (
            make_framework(policy, snapshot, workload)
            .schedule(PodRequest(cpu_milli=32000, memory_mib=65536))
            .node_name
        )

    assert place("fgd") == "dense"
    assert place("kgpu") == "rich"


def test_kgpu_counts_idle_gpu_the_node_cannot_feed() -> None:
    snapshot = ClusterSnapshot([NodeSpec("n", 96000, 393216, 8, "G2")])
    # 12 CPUs and 48 GiB per GPU requested by the workload.
    plugin = KgpuScore.for_workload(
        [PodRequest(cpu_milli=12000, memory_mib=49152, gpu_count=1, gpu_milli=1000)], snapshot
    )
    assert plugin.cpu_per_milli == 12.0 and plugin.memory_per_milli == 49.152
    idle = np.array([[1000] * 8])
    # 64 CPUs feed 5.33 GPUs: 2,667 milli-GPU stranded; memory (393,216 MiB = 8 x 48 GiB) strands none.
    assert plugin.stranded(np.array([64000]), np.array([393216]), idle).round().tolist() == [2667.0]
    assert plugin.stranded(np.array([96000]), np.array([393216]), idle).tolist() == [0.0]
    # No CPU asked for anywhere (CPU-only or GPU-only workloads): nothing is stranded by CPU.
    gpu_only = KgpuScore.for_workload([PodRequest(gpu_count=1, gpu_milli=500)], snapshot)
    assert gpu_only.stranded(np.array([0]), np.array([0]), idle).tolist() == [0.0]
    assert make_framework("kgpu", snapshot, [PodRequest(cpu_milli=1000)]).schedule(PodRequest(cpu_milli=1000))


def test_kgpu_share_fills_the_plentiful_gap_size_and_keeps_the_rare_one() -> None:
    # Free shares 500, 600, 600, 600 and a 0.4 share: best-fit takes the tightest (500 -> 100 left); kgpu
    # takes a 600 (sum of squares of the free-share histogram), keeping the only 0.5 gap for what fits it.
    workload = [PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=m) for m in (400, 200, 1000)]

    def gpus(policy: str) -> tuple[int, ...]:
        snapshot = ClusterSnapshot([NodeSpec("n", 64000, 262144, 4, "T4")])
        snapshot.gpu_left[0] = [500, 600, 600, 600]
        snapshot.version[:] += 1
        return (
            make_framework(policy, snapshot, workload)
            .schedule(PodRequest(cpu_milli=1000, gpu_count=1, gpu_milli=400))
            .gpus
        )

    assert gpus("best-fit") == (0,)
    assert gpus("kgpu") in ((1,), (2,), (3,))


def test_kgpu_share_does_not_open_an_idle_node_kept_for_multi_gpu_pods() -> None:
    # The idle 8-GPU node has almost no CPU, so filling it relieves stranding and the fragmentation score
    # alone (and FGD) would open it for a 0.4 share; the used node can take the share, so kgpu puts it there.
    workload = [PodRequest(cpu_milli=4000, gpu_count=1, gpu_milli=400)] * 20 + [
        PodRequest(cpu_milli=64000, gpu_count=8, gpu_milli=1000)
    ] * 2
    share = PodRequest(gpu_count=1, gpu_milli=400)

    def snapshot() -> ClusterSnapshot:
        s = ClusterSnapshot(
            [NodeSpec("idle", 8000, 262144, 8, "T4"), NodeSpec("used", 64000, 262144, 8, "T4")]
        )
        s.gpu_left[1] = [500, 0, 0, 0, 0, 0, 0, 0]
        s.version[:] += 1
        return s

    assert make_framework("fgd", snapshot(), workload).schedule(share).node_name == "idle"
    assert _kgpu(snapshot(), workload, protect=False).schedule(share).node_name == "idle"
    assert KgpuScore.for_workload(workload, snapshot()).protect_gpus == 8
    placed = make_framework("kgpu", snapshot(), workload).schedule(share)
    assert (placed.node_name, placed.gpus) == ("used", (0,))


def pinned_pool_cluster() -> ClusterSnapshot:
    # A small T4 pool listed first, each node with one of its two GPUs taken (2 GPUs free), then ten
    # idle 8-GPU G2 nodes (80 GPUs).
    s = ClusterSnapshot(
        [NodeSpec(f"t4-{i}", 64000, 262144, 2, "T4") for i in range(2)]
        + [NodeSpec(f"g2-{i}", 96000, 393216, 8, "G2") for i in range(10)]
    )
    s.gpu_left[:2, :2] = [1000, 0]
    s.version[:] += 1
    return s


def pinned_workload(pinned: int, unpinned: int) -> list[PodRequest]:
    return [PodRequest(cpu_milli=4000, gpu_count=1, gpu_milli=1000, gpu_models=("T4",))] * pinned + [
        PodRequest(cpu_milli=4000, gpu_count=1, gpu_milli=1000)
    ] * unpinned


UNPINNED = PodRequest(cpu_milli=4000, gpu_count=1, gpu_milli=1000)


def test_kgpu_keeps_a_small_pinned_pool_for_its_pods_when_their_demand_exceeds_it() -> None:
    # 4% of the GPU asked for is pinned to T4 (too rare to be a typical pod): 0.04 x 82 free GPUs > the
    # pool's 2, so the pool is short and an unpinned pod goes to G2. Without the rule (and under FGD)
    # it fills the first node, a T4, which packing prefers.
    workload = pinned_workload(pinned=4, unpinned=96)
    assert _kgpu(pinned_pool_cluster(), workload, pools=False).schedule(UNPINNED).node_name == "t4-0"
    assert make_framework("fgd", pinned_pool_cluster(), workload).schedule(UNPINNED).node_name == "t4-0"
    assert make_framework("kgpu", pinned_pool_cluster(), workload).schedule(UNPINNED).node_name == "g2-0"
    # a pinned pod still goes to its pool
    assert make_framework("kgpu", pinned_pool_cluster(), workload).schedule(workload[0]).node_name == "t4-0"


def test_kgpu_lets_unpinned_pods_use_a_pool_whose_pinned_demand_fits() -> None:
    # 1% pinned: 0.01 x 82 = 0.8 GPUs, under the pool's 2: nothing to keep, packing decides as before.
    workload = pinned_workload(pinned=1, unpinned=99)
    assert make_framework("kgpu", pinned_pool_cluster(), workload).schedule(UNPINNED).node_name == "t4-0"


def test_kgpu_feeds_gpus_at_the_gpu_pods_ratio_on_a_cluster_short_of_cpu() -> None:
    # 12 CPUs per GPU on the nodes; the workload with its CPU-only pods asks 15 per GPU, its GPU pods 10.
    workload = [PodRequest(cpu_milli=10000, gpu_count=1, gpu_milli=1000)] * 10 + [PodRequest(cpu_milli=50000)]
    poor = ClusterSnapshot([NodeSpec("g2", 96000, 393216, 8, "G2")])
    rich = ClusterSnapshot([NodeSpec("t4", 64000, 262144, 2, "T4")])
    assert KgpuScore.for_workload(workload, poor).cpu_per_milli == pytest.approx(10.0)
    assert KgpuScore.for_workload(workload, rich).cpu_per_milli == pytest.approx(15.0)
