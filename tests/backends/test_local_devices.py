"""Device assignment on one node: whole GPUs, shared slots with a memory cap, MIG devices, CPU."""

from __future__ import annotations

import pytest

from kgpu.backends.local_devices import LocalDevices, Unschedulable
from kgpu.gpu.discovery import GPUDevice, MigDevice, NodeInventory


def gpu(index: int, mig: list[MigDevice] | None = None) -> GPUDevice:
    return GPUDevice(
        index=index,
        uuid=f"GPU-{index:04d}",
        name="NVIDIA H200",
        catalog_model="H200-141GB",
        memory_total_mib=143771,
        memory_used_mib=0,
        utilization_gpu_pct=0,
        mig_enabled=mig is not None,
        mig_devices=mig or [],
    )


def node(*gpus: GPUDevice) -> NodeInventory:
    return NodeInventory(
        hostname="node-a", cpu_count=16, memory_mib=131072, driver_version="580", gpus=list(gpus), note=""
    )


def test_cpu_node_runs_gpu_less_services_on_cpu():
    devices = LocalDevices(node())
    a = devices.assign("svc-0", None, "auto", [])
    assert (a.device, a.visible_devices, a.memory_fraction) == ("cpu", "", None)


def test_auto_service_shares_the_gpu_with_a_memory_cap():
    devices = LocalDevices(node(gpu(0)), shared_slots=4)
    a = devices.assign("svc-0", None, "auto", [])
    assert a.device == "cuda" and a.visible_devices == "GPU-0000"
    assert a.memory_fraction == pytest.approx(0.25)


def test_whole_gpus_are_exclusive_and_released():
    devices = LocalDevices(node(gpu(0), gpu(1)))
    first = devices.assign("a-0", ("nvidia.com/gpu", 1), "auto", [])
    second = devices.assign("b-0", ("nvidia.com/gpu", 1), "auto", [])
    assert {first.visible_devices, second.visible_devices} == {"GPU-0000", "GPU-0001"}
    with pytest.raises(Unschedulable, match="Insufficient nvidia.com/gpu"):
        devices.assign("c-0", ("nvidia.com/gpu", 1), "auto", [])
    devices.release("a-0")
    third = devices.assign("c-0", ("nvidia.com/gpu", 1), "auto", [])
    assert third.visible_devices == first.visible_devices
    assert third.memory_fraction is None


def test_two_gpu_request_gets_both_devices():
    devices = LocalDevices(node(gpu(0), gpu(1)))
    a = devices.assign("a-0", ("nvidia.com/gpu", 2), "auto", [])
    assert a.visible_devices == "GPU-0000,GPU-0001"
    assert a.gpu_indices == (0, 1)


def test_shared_replicas_pack_one_gpu_before_the_next():
    devices = LocalDevices(node(gpu(0), gpu(1)), shared_slots=2)
    placed = [
        devices.assign(f"s-{i}", ("nvidia.com/gpu.shared", 1), "auto", []).visible_devices for i in range(4)
    ]
    assert placed.count("GPU-0000") == 2 and placed.count("GPU-0001") == 2
    with pytest.raises(Unschedulable, match=r"nvidia.com/gpu.shared"):
        devices.assign("s-4", ("nvidia.com/gpu.shared", 1), "auto", [])


def test_shared_gpu_is_not_given_whole():
    devices = LocalDevices(node(gpu(0)))
    devices.assign("s-0", ("nvidia.com/gpu.shared", 1), "auto", [])
    with pytest.raises(Unschedulable):
        devices.assign("w-0", ("nvidia.com/gpu", 1), "auto", [])


def test_mig_device_by_profile():
    mig = [
        MigDevice(uuid=f"MIG-{i}", profile="1g.18gb", gpu_instance_id=i, memory_total_mib=16384)
        for i in range(2)
    ]
    devices = LocalDevices(node(gpu(0, mig)))
    a = devices.assign("m-0", ("nvidia.com/mig-1g.18gb", 1), "auto", [])
    b = devices.assign("m-1", ("nvidia.com/mig-1g.18gb", 1), "auto", [])
    assert {a.visible_devices, b.visible_devices} == {"MIG-0", "MIG-1"}
    with pytest.raises(Unschedulable, match="mig-1g.18gb"):
        devices.assign("m-2", ("nvidia.com/mig-1g.18gb", 1), "auto", [])
    with pytest.raises(Unschedulable, match="mig-3g.71gb"):
        devices.assign("m-3", ("nvidia.com/mig-3g.71gb", 1), "auto", [])


def test_gpu_model_constraint_filters_devices():
    devices = LocalDevices(node(gpu(0)))
    with pytest.raises(Unschedulable):
        devices.assign("a-0", ("nvidia.com/gpu", 1), "auto", ["L4"])


def test_cuda_device_on_a_cpu_node_is_refused_with_reason():
    with pytest.raises(Unschedulable, match="no usable NVIDIA GPU"):
        LocalDevices(node()).assign("a-0", None, "cuda", [])
