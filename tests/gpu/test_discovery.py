from __future__ import annotations

import inspect
import json
import os
import socket
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest
import torch

from kgpu.gpu.discovery import discover
from tests.fake_nvml_mig import FakeMigCalls

MIB = 1024 * 1024
has_cuda = torch.cuda.is_available()


@pytest.mark.skipif(has_cuda, reason="checks the CPU-only path; this machine has a GPU")
def test_cpu_only_machine_gives_an_inventory_without_gpus() -> None:
    inventory = discover()
    assert inventory.gpus == []
    assert inventory.driver_version is None
    assert inventory.note.startswith("no NVIDIA driver (NVML: ")
    assert inventory.note.endswith("); serving on CPU")


def test_host_facts_come_from_this_machine() -> None:
    inventory = discover()
    assert inventory.hostname == socket.gethostname()
    assert 1 <= inventory.cpu_count <= (os.cpu_count() or 1)
    page = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // MIB
    assert inventory.memory_mib == page
    assert json.loads(json.dumps(inventory.to_dict()))["hostname"] == inventory.hostname


class FakeNVML(FakeMigCalls):
    """Stand-in for the ``pynvml`` module with the real function names and signatures.

    NVML cannot run on a machine without an NVIDIA driver, so these tests drive
    discovery through this object: GPU 0 is a plain H200, GPU 1 an H200 in MIG
    mode with a 4g.71gb and a 3g.71gb instance (slot 1 empty; the 3g device's name
    lacks its profile, so discovery must use the GPU instance's profile id).
    """

    NVMLError = pynvml.NVMLError
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE

    def __init__(self, init_error: int | None = None, count_error: int | None = None) -> None:
        self.init_error = init_error
        self.count_error = count_error
        self.shutdowns = 0
        gpu0 = {"name": "NVIDIA H200", "uuid": "GPU-0", "total": 143771 * MIB, "used": 1024 * MIB, "util": 37}
        gpu1 = {"name": "NVIDIA H200", "uuid": "GPU-1", "total": 143771 * MIB, "used": 0, "mig": True}
        self.gpus = [gpu0, gpu1]
        self.mig = {
            ("GPU-1", 0): {"name": "NVIDIA H200 MIG 4g.71gb", "uuid": "MIG-a", "gi": 1, "total": 71424 * MIB},
            ("GPU-1", 2): {"name": "NVIDIA H200 MIG", "uuid": "MIG-b", "gi": 2, "total": 71424 * MIB},
        }
        self.profile_ids = {("GPU-1", 1): 5, ("GPU-1", 2): 9}

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetCount(self) -> int:
        if self.count_error is not None:
            raise pynvml.NVMLError(self.count_error)
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: dict) -> str:
        return handle["name"]

    def nvmlDeviceGetUUID(self, handle: dict) -> str:
        return handle["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle: dict, version: Any = None) -> SimpleNamespace:
        return SimpleNamespace(total=handle["total"], used=handle.get("used", 0), free=0)

    def nvmlDeviceGetUtilizationRates(self, handle: dict) -> SimpleNamespace:
        if handle.get("mig"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=handle["util"], memory=5)

    def nvmlDeviceGetGpuInstanceById(self, device: dict, gpuInstanceId: int) -> tuple[str, int]:
        return (device["uuid"], gpuInstanceId)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: tuple[str, int]) -> SimpleNamespace:
        return SimpleNamespace(id=gpuInstance[1], profileId=self.profile_ids[gpuInstance])


def test_fake_nvml_matches_real_pynvml_names_and_signatures() -> None:
    for name, method in inspect.getmembers(FakeNVML, inspect.isfunction):
        if not name.startswith("nvml"):
            continue
        real = inspect.signature(getattr(pynvml, name))
        fake = inspect.signature(method)
        assert list(fake.parameters)[1:] == list(real.parameters), name


def test_discovery_with_fake_nvml_reads_gpus_and_mig_devices() -> None:
    """NVML cannot run here (no driver); the fake module stands in for pynvml."""
    fake = FakeNVML()
    inventory = discover(nvml=fake)
    assert inventory.driver_version == "580.159.04"
    assert inventory.note == "2 NVIDIA GPU(s), driver 580.159.04"
    plain, mig = inventory.gpus
    assert (plain.index, plain.uuid, plain.catalog_model) == (0, "GPU-0", "H200-141GB")
    assert (plain.memory_total_mib, plain.memory_used_mib, plain.utilization_gpu_pct) == (143771, 1024, 37)
    assert not plain.mig_enabled and plain.mig_devices == []
    assert mig.mig_enabled and mig.utilization_gpu_pct is None
    assert [(d.uuid, d.profile, d.gpu_instance_id, d.memory_total_mib) for d in mig.mig_devices] == [
        ("MIG-a", "4g.71gb", 1, 71424),
        ("MIG-b", "3g.71gb", 2, 71424),  # profile found through NVML profile id 9
    ]
    assert fake.shutdowns == 1
    assert inventory.to_dict()["gpus"][1]["mig_devices"][0]["profile"] == "4g.71gb"


def test_discovery_with_fake_nvml_without_driver_reports_cpu() -> None:
    """NVML cannot run here; the fake raises what nvmlInit raises without a driver."""
    inventory = discover(nvml=FakeNVML(init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))
    assert inventory.gpus == []
    assert inventory.note == "no NVIDIA driver (NVML: Driver Not Loaded); serving on CPU"


def test_discovery_with_fake_nvml_failing_mid_query_never_raises() -> None:
    """NVML cannot run here; the fake fails after init, as a lost GPU would."""
    fake = FakeNVML(count_error=pynvml.NVML_ERROR_GPU_IS_LOST)
    inventory = discover(nvml=fake)
    assert inventory.gpus == []
    assert inventory.note == "NVML query failed (GPU is lost); serving on CPU"
    assert fake.shutdowns == 1


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda, reason="needs an NVIDIA GPU")
def test_real_discovery_counts_the_gpus_torch_sees() -> None:
    inventory = discover()
    assert inventory.driver_version
    assert inventory.gpus, inventory.note
    for gpu in inventory.gpus:
        assert gpu.memory_total_mib > 0 and gpu.uuid.startswith("GPU-")
    # NVML sees every GPU; CUDA sees what CUDA_VISIBLE_DEVICES allows (MIG devices replace their GPU).
    if "CUDA_VISIBLE_DEVICES" not in os.environ and not any(g.mig_enabled for g in inventory.gpus):
        assert len(inventory.gpus) == torch.cuda.device_count()
    else:
        assert torch.cuda.device_count() >= 1


def test_memory_reads_nvml_v2_so_used_excludes_the_driver_reservation_and_falls_back_to_v1() -> None:
    from kgpu.gpu.discovery import MemoryReading, read_memory
    from tests.telemetry.fake_nvml import FakeNVML

    fake = FakeNVML()
    h200, old_driver = fake.gpus
    assert read_memory(fake, h200) == MemoryReading(
        total=143771, used=1024, free=143771 - 552 - 1024, reserved=552
    )
    assert read_memory(fake, old_driver) == MemoryReading(
        total=143771, used=2048, free=143771 - 2048, reserved=None
    )
