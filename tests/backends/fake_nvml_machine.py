"""A stand-in for the ``pynvml`` module describing a whole machine (NVML cannot run without a driver).

It implements the NVML calls discovery makes, with the real names and signatures and pynvml's error
type, so the local backend's placement is tested on inventories that discovery itself produced:
``discover(nvml=FakeNVMLMachine(...))``. GPUs are given as (NVML product name, memory MiB); MIG
devices as (profile, memory-slice start) per GPU index. ``report_placement=False`` makes the GPU
instance queries fail as they do for unprivileged users on real hosts.
"""

from __future__ import annotations

from types import SimpleNamespace

import pynvml

from kgpu.gpu.catalog import get_model, model_for_product_name
from tests.fake_nvml_mig import FakeMigCalls

MIB = 1024 * 1024
H100 = ("NVIDIA H100 80GB HBM3", 81559)
H200 = ("NVIDIA H200", 143771)
L4 = ("NVIDIA L4", 23034)


class FakeNVMLMachine(FakeMigCalls):
    MIG_PARENT_KEY = "index"  # self.mig is keyed by GPU index here
    NVMLError = pynvml.NVMLError
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE

    def __init__(
        self,
        gpus: list[tuple[str, int]],
        mig: dict[int, list[tuple[str, int]]] | None = None,
        report_placement: bool = True,
    ) -> None:
        self.report_placement = report_placement
        self.gpus = [
            {"index": i, "name": name, "uuid": f"GPU-{i:02d}", "total": mib * MIB, "mig": i in (mig or {})}
            for i, (name, mib) in enumerate(gpus)
        ]
        self.mig: dict[tuple[int, int], dict] = {}
        for index, devices in (mig or {}).items():
            model = model_for_product_name(gpus[index][0])
            assert model is not None
            for slot, (profile_name, start) in enumerate(devices):
                profile = get_model(model.name).mig_profile(profile_name)
                self.mig[(index, slot)] = {
                    "name": f"{gpus[index][0]} MIG {profile_name}",
                    "uuid": f"MIG-{index:02d}-{slot}",
                    "gi": slot + 1,
                    "total": profile.memory_mib * MIB,
                    "profile_id": profile.nvml_profile_id,
                    "start": start,
                    "size": profile.memory_slices,
                }

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetDriverVersion(self) -> str:
        return "580.159.04"

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: dict) -> str:
        return handle["name"]

    def nvmlDeviceGetUUID(self, handle: dict) -> str:
        return handle["uuid"]

    def nvmlDeviceGetMemoryInfo(self, handle: dict, version: object = None) -> SimpleNamespace:
        return SimpleNamespace(total=handle["total"], used=0, free=handle["total"])

    def nvmlDeviceGetUtilizationRates(self, handle: dict) -> SimpleNamespace:
        if handle.get("mig"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=0, memory=0)

    def nvmlDeviceGetGpuInstanceById(self, handle: dict, gpuInstanceId: int) -> dict:
        if not self.report_placement:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NO_PERMISSION)
        for (index, _), device in self.mig.items():
            if index == handle["index"] and device["gi"] == gpuInstanceId:
                return device
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)

    def nvmlGpuInstanceGetInfo(self, instance: dict) -> SimpleNamespace:
        # The fields of pynvml's c_nvmlGpuInstanceInfo_t that discovery reads.
        return SimpleNamespace(
            id=instance["gi"],
            profileId=instance["profile_id"],
            placement=SimpleNamespace(start=instance["start"], size=instance["size"]),
        )
