"""A stand-in for the ``pynvml`` module with the real function names and signatures.

NVML cannot run without an NVIDIA driver, so the exporter's NVML path is driven through this object:
GPU 0 is a plain H200 with readings like a real one; GPU 1 an H200 in MIG mode with a 4g.71gb and a
3g.71gb instance (the second's name lacks its profile, so it comes from the NVML profile id).
GPU 0 supports GPM (GPU Performance Monitoring): samples are real nvidia-ml-py ctypes objects, and
nvmlGpmMetricsGet fills the real request struct with the activity set in ``gpm`` when the second sample
was taken; GPU 1 does not support GPM.
"""

from __future__ import annotations

import ctypes
from types import SimpleNamespace
from typing import Any

import pynvml

from tests.fake_nvml_mig import FakeMigCalls

MIB = 1024 * 1024


class FakeNVML(FakeMigCalls):
    NVMLError = pynvml.NVMLError
    NVML_DEVICE_MIG_ENABLE = pynvml.NVML_DEVICE_MIG_ENABLE
    NVML_TEMPERATURE_GPU = pynvml.NVML_TEMPERATURE_GPU
    nvmlMemory_v2 = pynvml.nvmlMemory_v2
    NVML_CLOCK_SM = pynvml.NVML_CLOCK_SM
    NVML_CLOCK_MEM = pynvml.NVML_CLOCK_MEM
    NVML_FI_DEV_MEMORY_TEMP = pynvml.NVML_FI_DEV_MEMORY_TEMP
    NVML_SUCCESS = pynvml.NVML_SUCCESS
    NVML_VALUE_TYPE_DOUBLE = pynvml.NVML_VALUE_TYPE_DOUBLE
    NVML_VALUE_TYPE_UNSIGNED_INT = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    NVML_VALUE_TYPE_UNSIGNED_LONG = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG
    NVML_VALUE_TYPE_UNSIGNED_LONG_LONG = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    NVML_VALUE_TYPE_SIGNED_LONG_LONG = pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG
    nvmlEventTypeXidCriticalError = pynvml.nvmlEventTypeXidCriticalError
    NVML_GPM_METRICS_GET_VERSION = pynvml.NVML_GPM_METRICS_GET_VERSION
    NVML_GPM_METRIC_GRAPHICS_UTIL = pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL
    NVML_GPM_METRIC_SM_UTIL = pynvml.NVML_GPM_METRIC_SM_UTIL
    NVML_GPM_METRIC_SM_OCCUPANCY = pynvml.NVML_GPM_METRIC_SM_OCCUPANCY
    NVML_GPM_METRIC_ANY_TENSOR_UTIL = pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL
    NVML_GPM_METRIC_DRAM_BW_UTIL = pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL
    c_nvmlGpmMetricsGet_t = pynvml.c_nvmlGpmMetricsGet_t

    def __init__(self) -> None:
        self.inits = self.shutdowns = 0
        self.gpus = [
            {
                "name": "NVIDIA H200", "uuid": "GPU-0", "bus": "00000000:19:00.0", "total": 143771 * MIB,
                "used": 1024 * MIB, "reserved": 552 * MIB, "util": 37, "mem_util": 12, "power_mw": 123456, "energy_mj": 987654321,
                "temp": 41, "mem_temp": 39, "sm_clock": 1980, "mem_clock": 3201, "replays": 3,
            },
            {
                "name": "NVIDIA H200", "uuid": "GPU-1", "bus": "00000000:3B:00.0", "total": 143771 * MIB,
                "used": 2048 * MIB, "mig": True, "power_mw": 80000, "energy_mj": 5, "temp": 30,
                "mem_temp": 28, "sm_clock": 345, "mem_clock": 3201, "replays": 0,
            },
        ]  # fmt: skip
        self.mig = {
            ("GPU-1", 0): {"name": "NVIDIA H200 MIG 4g.71gb", "uuid": "MIG-a", "gi": 1, "total": 71424 * MIB,
                           "used": 500 * MIB},
            ("GPU-1", 2): {"name": "NVIDIA H200 MIG", "uuid": "MIG-b", "gi": 2, "total": 71424 * MIB,
                           "used": 0},
        }  # fmt: skip
        self.profile_ids = {("GPU-1", 1): 5, ("GPU-1", 2): 9}
        self.pending_events: list[SimpleNamespace] = []
        # GPM: percent per metric id on GPUs that support it; live samples by address.
        self.gpm: dict[str, dict[int, float]] = {"GPU-0": {}}
        self.gpm_samples: dict[int, dict[str, Any]] = {}
        self.gpm_taken = 0
        self.registered: list[str] = []

    def nvmlInit(self) -> None:
        self.inits += 1

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> dict:
        return self.gpus[index]

    def nvmlDeviceGetName(self, handle: dict) -> str:
        return handle["name"]

    def nvmlDeviceGetUUID(self, handle: dict) -> bytes:
        return handle["uuid"].encode()  # older nvidia-ml-py releases return bytes

    def nvmlDeviceGetPciInfo(self, handle: dict) -> SimpleNamespace:
        return SimpleNamespace(busId=handle["bus"].encode())

    def nvmlDeviceGetMemoryInfo(self, handle: dict, version: Any = None) -> SimpleNamespace:
        """v1 counts the driver's reservation as used; v2 reports it apart (GPU 0 only: the others
        behave like a driver without nvmlDeviceGetMemoryInfo_v2)."""
        reserved = handle.get("reserved")
        if version is None:
            used = handle["used"] + (reserved or 0)
            return SimpleNamespace(total=handle["total"], used=used, free=handle["total"] - used)
        assert version == pynvml.nvmlMemory_v2
        if reserved is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        free = handle["total"] - reserved - handle["used"]
        return SimpleNamespace(
            version=version, total=handle["total"], reserved=reserved, used=handle["used"], free=free
        )

    def nvmlDeviceGetUtilizationRates(self, handle: dict) -> SimpleNamespace:
        if handle.get("mig"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=handle["util"], memory=handle["mem_util"])

    def nvmlDeviceGetPowerUsage(self, handle: dict) -> int:
        return handle["power_mw"]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: dict) -> int:
        return handle["energy_mj"]

    def nvmlDeviceGetTemperature(self, handle: dict, sensor: int) -> int:
        assert sensor == pynvml.NVML_TEMPERATURE_GPU
        return handle["temp"]

    def nvmlDeviceGetFieldValues(self, handle: dict, fieldIds: list[int]) -> list[SimpleNamespace]:
        assert fieldIds == [pynvml.NVML_FI_DEV_MEMORY_TEMP]
        value = SimpleNamespace(uiVal=handle["mem_temp"])
        return [
            SimpleNamespace(
                nvmlReturn=pynvml.NVML_SUCCESS, valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT, value=value
            )
        ]

    def nvmlDeviceGetClockInfo(self, handle: dict, type: int) -> int:
        return handle["sm_clock"] if type == pynvml.NVML_CLOCK_SM else handle["mem_clock"]

    def nvmlDeviceGetPcieReplayCounter(self, handle: dict) -> int:
        return handle["replays"]

    def nvmlDeviceGetGpuInstanceById(self, device: dict, gpuInstanceId: int) -> tuple[str, int]:
        return (device["uuid"], gpuInstanceId)

    def nvmlGpuInstanceGetInfo(self, gpuInstance: tuple[str, int]) -> SimpleNamespace:
        return SimpleNamespace(id=gpuInstance[1], profileId=self.profile_ids[gpuInstance])

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlDeviceRegisterEvents(self, handle: dict, eventTypes: int, eventSet: str) -> None:
        if handle.get("mig"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self.registered.append(handle["uuid"])

    def nvmlEventSetWait_v2(self, eventSet: str, timeoutms: int) -> SimpleNamespace:
        if not self.pending_events:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_TIMEOUT)
        return self.pending_events.pop(0)

    def nvmlEventSetFree(self, eventSet: str) -> None:
        pass

    def nvmlGpmQueryDeviceSupport(self, device: dict) -> pynvml.c_nvmlGpmSupport_t:
        support = pynvml.c_nvmlGpmSupport_t()
        support.version = pynvml.NVML_GPM_SUPPORT_VERSION
        support.isSupportedDevice = int(device["uuid"] in self.gpm)
        return support

    def nvmlGpmSampleAlloc(self) -> pynvml.c_nvmlGpmSample_t:
        sample = pynvml.c_nvmlGpmSample_t(pynvml.struct_c_nvmlGpmSample_t())
        self.gpm_samples[ctypes.addressof(sample.contents)] = {"sample": sample, "taken": None}
        return sample

    def _gpm_sample(self, gpmSample: pynvml.c_nvmlGpmSample_t) -> dict[str, Any]:
        try:
            return self.gpm_samples[ctypes.addressof(gpmSample.contents)]
        except (KeyError, ValueError):  # freed, or a NULL pointer
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT) from None

    def nvmlGpmSampleGet(self, device: dict, gpmSample: pynvml.c_nvmlGpmSample_t) -> pynvml.c_nvmlGpmSample_t:
        if device["uuid"] not in self.gpm:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self.gpm_taken += 1
        self._gpm_sample(gpmSample).update(
            uuid=device["uuid"], taken=self.gpm_taken, activity=dict(self.gpm[device["uuid"]])
        )
        return gpmSample

    def nvmlGpmMetricsGet(self, metricsGet: pynvml.c_nvmlGpmMetricsGet_t) -> pynvml.c_nvmlGpmMetricsGet_t:
        if metricsGet.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        first, second = self._gpm_sample(metricsGet.sample1), self._gpm_sample(metricsGet.sample2)
        if first["taken"] is None or second["taken"] is None or first["uuid"] != second["uuid"]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if first["taken"] >= second["taken"]:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        for i in range(metricsGet.numMetrics):
            metric = metricsGet.metrics[i]
            if metric.metricId in second["activity"]:
                metric.value = second["activity"][metric.metricId]
                metric.nvmlReturn = pynvml.NVML_SUCCESS
            else:
                metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return metricsGet

    def nvmlGpmSampleFree(self, gpmSample: pynvml.c_nvmlGpmSample_t) -> None:
        self._gpm_sample(gpmSample)
        del self.gpm_samples[ctypes.addressof(gpmSample.contents)]
