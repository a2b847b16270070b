"""Local placement through the scheduling framework on machines described by a fake NVML.

No GPU here: every test whose name says ``fake_nvml`` builds its inventory with ``discover()`` over
``FakeNVMLMachine`` (real pynvml call names, signatures and error type), then checks the exact
CUDA_VISIBLE_DEVICES / memory cap each replica gets and that the scheduling snapshot stays exact.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kgpu.backends.local import LocalBackend
from kgpu.backends.local_devices import LocalDevices, Unschedulable
from kgpu.gpu.discovery import NodeInventory, discover
from kgpu.scheduling.machine import MachineSnapshot
from kgpu.scheduling.requests import MILLI, PodRequest
from kgpu.scheduling.snapshot import Placement
from kgpu.serving.replica_spec import build_replica_spec
from tests.backends.fake_nvml_machine import H100, H200, FakeNVMLMachine
from tests.backends.test_local_rollout import backend, live, no_processes, service, settle

assert no_processes  # replica processes are replaced by test_local_rollout's stand-in here too


def machine(gpus, mig=None, report_placement: bool = True) -> NodeInventory:
    return discover(nvml=FakeNVMLMachine(gpus, mig, report_placement))


def eight_h100() -> NodeInventory:
    return machine([H100] * 8)


# An H200 without MIG beside an H200 with MIG devices 2g.35gb@0, 1g.18gb@2, 1g.18gb@3, 3g.71gb@4.
H200_MIG_LAYOUT = {1: [("3g.71gb", 4), ("2g.35gb", 0), ("1g.18gb", 2), ("1g.18gb", 3)]}


def h200_with_mig(report_placement: bool = True) -> NodeInventory:
    return machine([H200, H200], H200_MIG_LAYOUT, report_placement)


# ---------------------------------------------------------------- whole GPUs


def test_fake_nvml_8xh100_whole_gpus_get_exact_devices_and_an_over_request_is_refused():
    devices = LocalDevices(eight_h100())
    a = devices.assign("a-0", ("nvidia.com/gpu", 2), "auto", [])
    b = devices.assign("b-0", ("nvidia.com/gpu", 4), "auto", [])
    c = devices.assign("c-0", ("nvidia.com/gpu", 1), "auto", [])
    assert a.visible_devices == "GPU-00,GPU-01" and a.gpu_indices == (0, 1)
    assert b.visible_devices == "GPU-02,GPU-03,GPU-04,GPU-05" and b.label == "cuda:2,cuda:3,cuda:4,cuda:5"
    assert c.visible_devices == "GPU-06" and c.memory_fraction is None
    with pytest.raises(Unschedulable) as exc:
        devices.assign("d-0", ("nvidia.com/gpu", 2), "auto", [])
    assert str(exc.value) == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu (requested 2, free 1)."
    devices.release("b-0")
    d = devices.assign("d-0", ("nvidia.com/gpu", 2), "auto", [])
    assert d.visible_devices == "GPU-02,GPU-03"
    assert devices.snapshot.gpu_left.tolist() == [[0, 0, 0, 0, MILLI, MILLI, 0, MILLI]]


def test_fake_nvml_8xh100_nine_gpus_stay_pending_naming_the_resource():
    with pytest.raises(Unschedulable, match=r"Insufficient nvidia.com/gpu \(requested 9, free 8\)"):
        LocalDevices(eight_h100()).assign("big-0", ("nvidia.com/gpu", 9), "auto", [])


def test_fake_nvml_gpu_model_constraint_names_the_resource_and_model():
    devices = LocalDevices(eight_h100())
    with pytest.raises(Unschedulable) as exc:
        devices.assign("a-0", ("nvidia.com/gpu", 1), "auto", ["L4"])
    assert str(exc.value) == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu (no GPU of model L4)."
    assert devices.assign("a-0", ("nvidia.com/gpu", 1), "auto", ["H100-80GB"]).visible_devices == "GPU-00"


# ---------------------------------------------------------------- shares


def test_fake_nvml_shares_get_a_memory_cap_and_pack_before_whole_gpus():
    devices = LocalDevices(machine([H100, H100]), shared_slots=4)
    shares = [devices.assign(f"s-{i}", ("nvidia.com/gpu.shared", 1), "auto", []) for i in range(5)]
    assert [s.visible_devices for s in shares] == ["GPU-00"] * 4 + ["GPU-01"]
    assert {s.memory_fraction for s in shares} == {0.25}
    assert shares[0].label == "cuda:0 (shared, 25% memory)"
    # GPU 1 holds a share, so no whole GPU is left.
    with pytest.raises(Unschedulable, match=r"Insufficient nvidia.com/gpu \(requested 1, free 0\)"):
        devices.assign("w-0", ("nvidia.com/gpu", 1), "auto", [])
    devices.release("s-4")
    assert devices.assign("w-0", ("nvidia.com/gpu", 1), "auto", []).visible_devices == "GPU-01"
    with pytest.raises(
        Unschedulable, match=r"^0/1 nodes are available: 1 Insufficient nvidia.com/gpu.shared.$"
    ):
        devices.assign("s-5", ("nvidia.com/gpu.shared", 1), "auto", [])


def test_fake_nvml_milli_and_memory_shares_get_exact_fractions():
    devices = LocalDevices(machine([H100]))
    milli = devices.place("m-0", PodRequest(gpu_count=1, gpu_milli=300))
    assert (milli.visible_devices, milli.memory_fraction) == ("GPU-00", 0.3)
    memory = devices.place("g-0", PodRequest(gpu_count=1, gpu_memory_mib=40_000))
    # The cap is the requested memory over what NVML reports for the GPU.
    assert memory.memory_fraction == pytest.approx(40_000 / 81559)
    # The snapshot holds the share as milli-GPU of the catalog model (80 GiB): ceil(40000 * 1000 / 81920).
    assert devices.snapshot.gpu_left[0, 0] == MILLI - 300 - 489
    with pytest.raises(Unschedulable, match=r"Insufficient GPU memory \(40000 MiB on one GPU\)"):
        devices.place("g-1", PodRequest(gpu_count=1, gpu_memory_mib=40_000))


def test_fake_nvml_time_sliced_machine_hands_out_slices_with_a_memory_cap():
    devices = LocalDevices(machine([H100, H100]), time_slice_replicas=2)
    got = [devices.assign(f"t-{i}", ("nvidia.com/gpu.shared", 1), "auto", []) for i in range(4)]
    assert sorted(a.visible_devices for a in got) == ["GPU-00", "GPU-00", "GPU-01", "GPU-01"]
    assert {a.memory_fraction for a in got} == {0.5} and all(a.time_slice for a in got)
    with pytest.raises(Unschedulable, match=r"Insufficient nvidia.com/gpu.shared"):
        devices.assign("t-4", ("nvidia.com/gpu.shared", 1), "auto", [])
    # Time-sliced GPUs are not handed out whole.
    with pytest.raises(Unschedulable, match=r"Insufficient nvidia.com/gpu "):
        devices.assign("w-0", ("nvidia.com/gpu", 1), "auto", [])
    devices.release("t-1")
    assert (
        devices.assign("t-4", ("nvidia.com/gpu.shared", 1), "auto", []).visible_devices
        == got[1].visible_devices
    )


def test_fake_nvml_auto_runtime_shares_the_gpu_then_falls_back_to_cpu_and_cuda_waits():
    devices = LocalDevices(machine([H100]), shared_slots=2)
    assert devices.assign("a-0", None, "auto", []).memory_fraction == 0.5
    assert devices.assign("a-1", None, "auto", []).visible_devices == "GPU-00"
    assert devices.assign("a-2", None, "auto", []).device == "cpu"
    with pytest.raises(Unschedulable, match="Insufficient GPU share"):
        devices.assign("c-0", None, "cuda", [])
    assert devices.assign("p-0", None, "cpu", []).device == "cpu"


def test_cpu_only_machine_is_one_node_without_gpus():
    inventory = NodeInventory(
        hostname="cpu-box", cpu_count=2, memory_mib=4096, driver_version=None, gpus=[], note=""
    )
    devices = LocalDevices(inventory)
    assert devices.snapshot.num_nodes == 1 and devices.snapshot.capacity_milli == 0
    assert devices.assign("a-0", None, "auto", []).visible_devices == ""
    with pytest.raises(Unschedulable, match="Insufficient nvidia.com/gpu"):
        devices.assign("g-0", ("nvidia.com/gpu", 1), "auto", [])


# ---------------------------------------------------------------- MIG


@pytest.mark.parametrize("report_placement", [True, False], ids=["nvml-placement", "catalog-geometry"])
def test_fake_nvml_h200_mig_devices_by_profile(report_placement: bool):
    devices = LocalDevices(h200_with_mig(report_placement))
    one = [devices.assign(f"o-{i}", ("nvidia.com/mig-1g.18gb", 1), "auto", []) for i in range(2)]
    assert [a.visible_devices for a in one] == ["MIG-01-2", "MIG-01-3"]
    assert one[0].label == "cuda:1 MIG 1g.18gb" and one[0].mig_uuid == "MIG-01-2"
    assert one[0].memory_fraction is None and one[0].gpu_indices == ()
    three = devices.assign("t-0", ("nvidia.com/mig-3g.71gb", 1), "auto", [])
    assert three.visible_devices == "MIG-01-0"
    with pytest.raises(
        Unschedulable, match=r"^0/1 nodes are available: 1 Insufficient nvidia.com/mig-1g.18gb.$"
    ):
        devices.assign("o-2", ("nvidia.com/mig-1g.18gb", 1), "auto", [])
    # The MIG GPU is never handed out whole; the other H200 is.
    assert devices.assign("w-0", ("nvidia.com/gpu", 1), "auto", []).visible_devices == "GPU-00"
    with pytest.raises(Unschedulable, match=r"requested 1, free 0"):
        devices.assign("w-1", ("nvidia.com/gpu", 1), "auto", [])
    devices.release("o-0")
    assert devices.assign("o-2", ("nvidia.com/mig-1g.18gb", 1), "auto", []).visible_devices == "MIG-01-2"


def test_fake_nvml_mig_request_takes_only_devices_that_exist():
    # One 3g.71gb device at slices 4-7; slices 0-3 hold no device, so nothing else may go there.
    devices = LocalDevices(machine([H200], {0: [("3g.71gb", 4)]}))
    assert devices.assign("a-0", ("nvidia.com/mig-3g.71gb", 1), "auto", []).visible_devices == "MIG-00-0"
    for profile in ("3g.71gb", "4g.71gb", "1g.18gb"):
        with pytest.raises(Unschedulable, match=f"Insufficient nvidia.com/mig-{profile}"):
            devices.assign(f"x-{profile}", (f"nvidia.com/mig-{profile}", 1), "auto", [])
    assert devices.snapshot.state()["mig_instances"] == {(0, 0): [("3g.71gb", 4, 4)]}


# ---------------------------------------------------------------- through the backend


async def test_fake_nvml_8xh100_backend_sets_cuda_visible_devices_and_releases_on_scale_down():
    b = backend(eight_h100())
    await b.ensure(service(5, gpus=2), 5)
    replicas = b._replicas["default/m"]
    env = {name: r._env()["CUDA_VISIBLE_DEVICES"] for name, r in replicas.items()}
    assert env == {
        "m-0": "GPU-00,GPU-01",
        "m-1": "GPU-02,GPU-03",
        "m-2": "GPU-04,GPU-05",
        "m-3": "GPU-06,GPU-07",
    }
    assert all("KGPU_GPU_MEMORY_FRACTION" not in r._env() for r in replicas.values())
    pending = [r for r in b.replicas("default/m") if r.phase == "Pending"]
    assert [(r.name, r.message) for r in pending] == [
        ("m-4", "0/1 nodes are available: 1 Insufficient nvidia.com/gpu (requested 2, free 0).")
    ]
    assert b.events == ["1 replica(s) pending (m-4 first): " + pending[0].message]

    await b.ensure(service(2, gpus=2), 2)
    await settle(b)
    assert live(b) == ["m-0", "m-1"]
    assert b.devices.snapshot.gpu_left.tolist() == [[0] * 4 + [MILLI] * 4]
    assert set(b.devices.assignments()) == {"m-0", "m-1"}

    await b.ensure(service(3, gpus=2), 3)
    assert b._replicas["default/m"]["m-2"]._env()["CUDA_VISIBLE_DEVICES"] == "GPU-04,GPU-05"
    await b.remove("default/m")
    await settle(b)
    assert b.devices.snapshot.state()["gpu_left"].tolist() == [[MILLI] * 8]
    assert b.devices.assignments() == {}


async def test_fake_nvml_backend_shared_replicas_get_the_memory_cap_in_their_environment():
    b = backend(machine([H200]))
    spec = service(2)
    spec.spec.resources.limits["nvidia.com/gpu.shared"] = 1
    await b.ensure(spec, 2)
    envs = [r._env() for r in b._replicas["default/m"].values()]
    assert [(e["CUDA_VISIBLE_DEVICES"], e["KGPU_GPU_MEMORY_FRACTION"]) for e in envs] == [
        ("GPU-00", "0.2500"),
        ("GPU-00", "0.2500"),
    ]


async def test_fake_nvml_rollout_on_a_full_8xh100_node_moves_replica_by_replica():
    b = backend(eight_h100())
    await b.ensure(service(2, gpus=4), 2)
    for r in b._replicas["default/m"].values():
        r.phase = "Ready"
    changed = service(2, batch_tokens=4096, gpus=4)
    for _ in range(6):
        await b.ensure(changed, 2)
        await settle(b)
        for r in b._replicas["default/m"].values():
            r.phase = "Ready"
    now = b._replicas["default/m"]
    assert len(live(b)) == 2 and all(
        r.spec.args[r.spec.args.index("--max-batch-tokens") + 1] == "4096" for r in now.values()
    )
    held = sorted(r._env()["CUDA_VISIBLE_DEVICES"] for r in now.values())
    assert held == ["GPU-00,GPU-01,GPU-02,GPU-03", "GPU-04,GPU-05,GPU-06,GPU-07"]
    assert set(b.devices.assignments()) == set(now)
    assert (b.devices.snapshot.gpu_left == 0).all()


# ---------------------------------------------------------------- the snapshot stays exact


def rebuilt_state(inventory: NodeInventory, devices: LocalDevices, **kwargs) -> dict:
    """A fresh snapshot of the machine with the live replicas' devices taken, read from their
    assignments (GPU indices, milli-GPU, MIG UUIDs) rather than from the recorded placements."""
    fresh = MachineSnapshot(inventory, **kwargs)
    for a in devices.assignments().values():
        if a.mig_uuid:
            for (node, slot), slots in fresh.mig.items():
                for d in slots:
                    if d.uuid == a.mig_uuid:
                        fresh.snapshot.apply(
                            Placement(
                                node,
                                "",
                                "mig",
                                (slot,),
                                mig_profile=d.profile,
                                mig_start=d.start,
                                mig_size=d.size,
                            ),
                            +1,
                        )
            continue
        for index in a.gpu_indices:
            node, slot = fresh.slot_of[index]
            kind = "time-slice" if a.time_slice else "share"
            fresh.snapshot.apply(Placement(node, "", kind, (slot,), milli_per_gpu=a.milli_per_gpu), +1)
    return fresh.snapshot.state()


def same_state(a: dict, b: dict) -> bool:
    arrays = ("cpu_left", "memory_left", "gpu_left", "mig_used_mask", "time_slice_used")
    if not all(np.array_equal(a[k], b[k]) for k in arrays):
        return False
    norm = lambda m: {k: sorted(v) for k, v in m.items()}  # noqa: E731
    return norm(a["mig_instances"]) == norm(b["mig_instances"])


REQUESTS = st.one_of(
    st.builds(lambda n: PodRequest(gpu_count=n, gpu_milli=MILLI), st.integers(1, 3)),
    st.builds(lambda m: PodRequest(gpu_count=1, gpu_milli=m), st.integers(1, MILLI)),
    st.builds(lambda mib: PodRequest(gpu_count=1, gpu_memory_mib=mib), st.integers(1, 150_000)),
    st.sampled_from([PodRequest(mig_profile=p) for p in ("1g.18gb", "2g.35gb", "3g.71gb", "4g.71gb")]),
    st.just(PodRequest()),
)
OPS = st.lists(
    st.one_of(st.tuples(st.just("place"), REQUESTS), st.tuples(st.just("release"), st.integers(0, 50))),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS, time_slicing=st.booleans())
def test_fake_nvml_snapshot_equals_a_fresh_one_for_the_live_replicas(ops, time_slicing):
    inventory = machine([H200, H200, H200], H200_MIG_LAYOUT)
    kwargs = {"time_slice_replicas": 3} if time_slicing else {}
    devices = LocalDevices(inventory, **kwargs)
    names: list[str] = []
    for step, (op, arg) in enumerate(ops):
        if op == "place":
            request = PodRequest(time_slice=True) if time_slicing and arg.kind == "share" else arg
            try:
                devices.place(f"r-{step}", request)
                names.append(f"r-{step}")
            except Unschedulable as exc:
                assert "Insufficient" in str(exc)
        elif names:
            devices.release(names.pop(arg % len(names)))
        assert same_state(devices.snapshot.state(), rebuilt_state(inventory, devices, **kwargs))
        held = [a for a in devices.assignments().values() if a.device == "cuda"]
        mig = [a.mig_uuid for a in held if a.mig_uuid]
        assert len(mig) == len(set(mig))  # no MIG device twice
        whole = [i for a in held if a.milli_per_gpu == MILLI for i in a.gpu_indices]
        shared = [i for a in held if a.milli_per_gpu < MILLI for i in a.gpu_indices]
        assert len(whole) == len(set(whole)) and not set(whole) & set(shared)
    for name in names:
        devices.release(name)
    assert same_state(devices.snapshot.state(), MachineSnapshot(inventory, **kwargs).snapshot.state())


async def test_fake_nvml_a_stopped_backend_gives_everything_back():
    b = backend(h200_with_mig())
    await b.ensure(service(2, gpus=1), 2)
    await b.shutdown()
    assert b.devices.assignments() == {}
    assert same_state(b.devices.snapshot.state(), MachineSnapshot(h200_with_mig()).snapshot.state())


def test_fake_nvml_discovery_reads_where_each_mig_instance_sits():
    gpu = h200_with_mig().gpus[1]
    assert [(d.uuid, d.profile, d.placement_start, d.placement_size) for d in gpu.mig_devices] == [
        ("MIG-01-0", "3g.71gb", 4, 4),
        ("MIG-01-1", "2g.35gb", 0, 2),
        ("MIG-01-2", "1g.18gb", 2, 1),
        ("MIG-01-3", "1g.18gb", 3, 1),
    ]
    unprivileged = h200_with_mig(report_placement=False).gpus[1]
    assert {(d.placement_start, d.placement_size) for d in unprivileged.mig_devices} == {(None, None)}
    # Without NVML's placements the catalog's geometry places the same profiles without overlap.
    slots = MachineSnapshot(h200_with_mig(report_placement=False)).mig[(1, 0)]
    covered = [s for d in slots for s in range(d.start, d.start + d.size)]
    assert sorted(covered) == list(range(8))


def test_fake_nvml_a_gpu_the_catalog_does_not_know_is_still_placed():
    devices = LocalDevices(machine([("NVIDIA GeForce RTX 4090", 24564)] * 2), shared_slots=2)
    assert devices.snapshot.models[0].name == "NVIDIA GeForce RTX 4090"
    assert devices.assign("w-0", ("nvidia.com/gpu", 1), "auto", []).visible_devices == "GPU-00"
    share = devices.assign("s-0", None, "auto", [])
    assert (share.visible_devices, share.memory_fraction) == ("GPU-01", 0.5)
    with pytest.raises(Unschedulable, match="no GPU of model L4"):
        devices.assign("l-0", ("nvidia.com/gpu", 1), "auto", ["L4"])


async def test_fake_nvml_backend_on_a_time_sliced_machine_gives_slices_with_their_memory_cap():
    b = LocalBackend("unused-state", machine([H100]), backend().hooks, time_slice_replicas=3)
    spec = service(4)
    spec.spec.resources.limits["nvidia.com/gpu.shared"] = 1
    await b.ensure(spec, 4)
    envs = [r._env() for r in b._replicas["default/m"].values()]
    assert [(e["CUDA_VISIBLE_DEVICES"], e["KGPU_GPU_MEMORY_FRACTION"]) for e in envs] == [
        ("GPU-00", "0.3333")
    ] * 3
    assert [r.message for r in b.replicas("default/m") if r.phase == "Pending"] == [
        "0/1 nodes are available: 1 Insufficient nvidia.com/gpu.shared."
    ]


def test_engine_workers_reach_the_local_replica_only_when_the_spec_sets_them():
    plain = service()
    assert "--engine-workers" not in build_replica_spec(plain).args
    tuned = service().model_copy(deep=True)
    tuned.spec.runtime.engine_workers = 3
    args = list(build_replica_spec(tuned).args)
    assert args[args.index("--engine-workers") + 1] == "3"
