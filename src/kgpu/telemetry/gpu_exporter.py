"""GPU metrics read through NVML at scrape time, named like NVIDIA's DCGM exporter.

Dashboards and alerts written for the DCGM exporter (metric names, units, the `gpu`, `UUID`,
`pci_bus_id`, `device`, `modelName`, `Hostname` labels, and `GPU_I_PROFILE`/`GPU_I_ID` on MIG
devices) work unchanged on kgpu's `/metrics`. kgpu adds `project`, `service` and `replica`: which
replicas use each GPU or MIG device. Replicas sharing a device are listed comma-separated.

The DCGM profiling fields (`DCGM_FI_PROF_*`, ratios 0..1) come from NVML's GPU Performance Monitoring
(GPM, Hopper and later), which compares two samples: the exporter takes one per GPU at each scrape, so they
cover the time since the previous scrape and appear from the second scrape on, on GPUs that support GPM.

On a machine without an NVIDIA GPU the collector yields nothing and logs why, once.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kgpu.gpu.discovery import MemoryReading, _mig_profile, _text, read_memory

log = logging.getLogger("kgpu.telemetry")


# name -> (help, Prometheus type). DCGM's counters have no `_total` suffix; prometheus_client would add
# one to a "counter" family, so they are exposed untyped under their exact DCGM names.
GPU_METRICS: dict[str, tuple[str, str]] = {
    "DCGM_FI_DEV_GPU_UTIL": ("GPU utilization (in %).", "gauge"),
    "DCGM_FI_DEV_MEM_COPY_UTIL": ("Memory utilization (in %).", "gauge"),
    "DCGM_FI_DEV_FB_USED": ("Framebuffer memory used (in MiB).", "gauge"),
    "DCGM_FI_DEV_FB_FREE": ("Framebuffer memory free (in MiB).", "gauge"),
    "DCGM_FI_DEV_FB_RESERVED": ("Framebuffer memory reserved (in MiB).", "gauge"),
    "DCGM_FI_DEV_POWER_USAGE": ("Power draw (in W).", "gauge"),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": ("Total energy consumption since boot (in mJ).", "unknown"),
    "DCGM_FI_DEV_GPU_TEMP": ("GPU temperature (in C).", "gauge"),
    "DCGM_FI_DEV_MEMORY_TEMP": ("Memory temperature (in C).", "gauge"),
    "DCGM_FI_DEV_SM_CLOCK": ("SM clock frequency (in MHz).", "gauge"),
    "DCGM_FI_DEV_MEM_CLOCK": ("Memory clock frequency (in MHz).", "gauge"),
    "DCGM_FI_DEV_XID_ERRORS": ("Value of the last XID error encountered.", "gauge"),
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": ("Total number of PCIe retries.", "unknown"),
}
GPU_METRIC_NAMES = frozenset(GPU_METRICS)
# name -> (help, the NVML GPM metric it is read from, in percent).
PROF_METRICS: dict[str, tuple[str, str]] = {
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": (
        "Ratio of time the graphics engine is active.",
        "NVML_GPM_METRIC_GRAPHICS_UTIL",
    ),
    "DCGM_FI_PROF_SM_ACTIVE": (
        "The ratio of cycles an SM has at least 1 warp assigned.",
        "NVML_GPM_METRIC_SM_UTIL",
    ),
    "DCGM_FI_PROF_SM_OCCUPANCY": (
        "The ratio of number of warps resident on an SM.",
        "NVML_GPM_METRIC_SM_OCCUPANCY",
    ),
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": (
        "Ratio of cycles the tensor (HMMA) pipe is active.",
        "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    ),
    "DCGM_FI_PROF_DRAM_ACTIVE": (
        "Ratio of cycles the device memory interface is active sending or receiving data.",
        "NVML_GPM_METRIC_DRAM_BW_UTIL",
    ),
}
PROF_METRIC_NAMES = frozenset(PROF_METRICS)
# NVML needs GPM samples at least this far apart; a faster scrape repeats the last values.
GPM_MIN_INTERVAL_S = 0.1

_BASE_LABELS = ["gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname"]
_MIG_LABELS = ["GPU_I_PROFILE", "GPU_I_ID"]
_KGPU_LABELS = ["project", "service", "replica"]


@dataclass(frozen=True)
class DeviceUser:
    """A replica using a GPU (by index) or a MIG device (by its UUID)."""

    project: str
    service: str  # "<project>/<name>", as on every other kgpu metric
    replica: str
    gpu_index: int | None = None
    mig_uuid: str | None = None


@dataclass
class _Sample:
    labels: dict[str, str]
    values: dict[str, float]


def _users_labels(users: list[DeviceUser]) -> dict[str, str]:
    def joined(values: Iterable[str]) -> str:
        return ",".join(sorted(set(values)))

    return {
        "project": joined(u.project for u in users),
        "service": joined(u.service for u in users),
        "replica": joined(u.replica for u in users),
    }


class GPUExporter(Collector):
    """prometheus_client collector; ``nvml`` replaces the ``pynvml`` module (tests pass a stand-in)."""

    def __init__(
        self,
        users: Callable[[], list[DeviceUser]] = list,
        nvml: ModuleType | Any | None = None,
        hostname: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._users = users
        self._nvml = nvml
        self.hostname = hostname or socket.gethostname()
        self._initialized = False
        self.unavailable_reason: str | None = None
        self._xid_events: Any = None
        self._last_xid: dict[str, int] = {}
        self._clock = clock
        self._gpm_supported: dict[str, bool] = {}
        self._gpm_samples: dict[str, tuple[Any, float]] = {}  # uuid -> (previous sample, when taken)
        self._gpm_last: dict[str, dict[str, float]] = {}

    def describe(self) -> list[Metric]:
        # Declared without reading NVML, so registering the collector stays cheap.
        return []

    def _start(self) -> bool:
        if self._initialized:
            return True
        if self.unavailable_reason is not None:
            return False
        if self._nvml is None:
            try:
                import pynvml

                self._nvml = pynvml
            except ImportError:
                return self._unavailable("nvidia-ml-py (pynvml) is not installed")
        try:
            self._nvml.nvmlInit()
            count = self._nvml.nvmlDeviceGetCount()
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded and kin
            return self._unavailable(f"no NVIDIA driver (NVML: {exc})")
        if count == 0:
            return self._unavailable("NVML found no GPUs")
        self._initialized = True
        self._watch_xid_events(count)
        log.info("GPU metrics: exporting %d NVIDIA GPU(s) with DCGM exporter names", count)
        return True

    def _unavailable(self, why: str) -> bool:
        self.unavailable_reason = why
        log.info("GPU metrics: none exported (%s)", why)
        return False

    def _watch_xid_events(self, count: int) -> None:
        """XIDs arrive as NVML events; register once, drain at every scrape."""
        nvml = self._nvml
        try:
            self._xid_events = nvml.nvmlEventSetCreate()
        except Exception:
            self._xid_events = None
            return
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                nvml.nvmlDeviceRegisterEvents(handle, nvml.nvmlEventTypeXidCriticalError, self._xid_events)
                self._last_xid.setdefault(_text(nvml.nvmlDeviceGetUUID(handle)), 0)
            except Exception:
                continue  # some GPUs (and MIG modes) do not report XID events

    def _drain_xid_events(self) -> None:
        if self._xid_events is None:
            return
        nvml = self._nvml
        for _ in range(1000):  # bounded: a storm of events must not hold up the scrape
            try:
                event = nvml.nvmlEventSetWait_v2(self._xid_events, 0)
            except nvml.NVMLError:
                return  # timeout: no more events
            uuid = _text(nvml.nvmlDeviceGetUUID(event.device))
            self._last_xid[uuid] = int(event.eventData)

    def close(self) -> None:
        if not self._initialized:
            return
        try:
            for sample, _ in self._gpm_samples.values():
                self._nvml.nvmlGpmSampleFree(sample)
            self._gpm_samples.clear()
            if self._xid_events is not None:
                self._nvml.nvmlEventSetFree(self._xid_events)
            self._nvml.nvmlShutdown()
        except Exception:
            pass  # nothing useful to do if shutdown fails
        self._initialized = False

    def collect(self) -> Iterator[Metric]:
        if not self._start():
            return
        try:
            samples = self._read()
        except self._nvml.NVMLError as exc:
            log.warning("GPU metrics: NVML read failed (%s); skipping this scrape", exc)
            return
        yield from _families(samples)

    def _read(self) -> list[_Sample]:
        nvml = self._nvml
        self._drain_xid_events()
        users = self._users()
        samples = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(nvml.nvmlDeviceGetUUID(handle))
            name = _text(nvml.nvmlDeviceGetName(handle))
            pci = self._optional("nvmlDeviceGetPciInfo", handle)
            base = {
                "gpu": str(index),
                "UUID": uuid,
                "pci_bus_id": _text(pci.busId) if pci is not None else "",
                "device": f"nvidia{index}",
                "modelName": name,
                "Hostname": self.hostname,
            }
            gpu_users = [u for u in users if u.gpu_index == index]
            mig_devices = self._mig_devices(handle, name)
            mig_user_uuids = {uuid for uuid, *_ in mig_devices}
            gpu_users += [u for u in users if u.mig_uuid in mig_user_uuids]
            samples.append(_Sample({**base, **_users_labels(gpu_users)}, self._gpu_values(handle, uuid)))
            for mig_uuid, mig_handle, profile, gi_id in mig_devices:
                memory = read_memory(self._nvml, mig_handle)
                if memory is None:
                    continue
                labels = {
                    **base,
                    "GPU_I_PROFILE": profile or "",
                    "GPU_I_ID": "" if gi_id is None else str(gi_id),
                    **_users_labels([u for u in users if u.mig_uuid == mig_uuid]),
                }
                samples.append(_Sample(labels, _memory_values(memory)))
        return samples

    def _optional(self, fn_name: str, *args: Any) -> Any:
        """An NVML query that some GPUs or modes do not support: None when it fails."""
        try:
            return getattr(self._nvml, fn_name)(*args)
        except (self._nvml.NVMLError, AttributeError):
            return None

    def _gpu_values(self, handle: Any, uuid: str) -> dict[str, float]:
        nvml = self._nvml
        values: dict[str, float | None] = {}
        utilization = self._optional("nvmlDeviceGetUtilizationRates", handle)  # not in MIG mode
        if utilization is not None:
            values["DCGM_FI_DEV_GPU_UTIL"] = utilization.gpu
            values["DCGM_FI_DEV_MEM_COPY_UTIL"] = utilization.memory
        memory = read_memory(nvml, handle)
        if memory is not None:
            values.update(_memory_values(memory))
        power_mw = self._optional("nvmlDeviceGetPowerUsage", handle)
        values["DCGM_FI_DEV_POWER_USAGE"] = power_mw / 1000 if power_mw is not None else None
        values["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] = self._optional(
            "nvmlDeviceGetTotalEnergyConsumption", handle
        )
        values["DCGM_FI_DEV_GPU_TEMP"] = self._optional(
            "nvmlDeviceGetTemperature", handle, nvml.NVML_TEMPERATURE_GPU
        )
        values["DCGM_FI_DEV_MEMORY_TEMP"] = self._field_value(handle, nvml.NVML_FI_DEV_MEMORY_TEMP)
        values["DCGM_FI_DEV_SM_CLOCK"] = self._optional("nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_SM)
        values["DCGM_FI_DEV_MEM_CLOCK"] = self._optional(
            "nvmlDeviceGetClockInfo", handle, nvml.NVML_CLOCK_MEM
        )
        values["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"] = self._optional("nvmlDeviceGetPcieReplayCounter", handle)
        if uuid in self._last_xid:
            values["DCGM_FI_DEV_XID_ERRORS"] = self._last_xid[uuid]
        values.update(self._gpm_values(handle, uuid))
        return {k: float(v) for k, v in values.items() if v is not None}

    def _gpm_values(self, handle: Any, uuid: str) -> dict[str, float]:
        """Profiling ratios over the time since the previous scrape's GPM sample; none on the first scrape
        or where GPM is unsupported (before Hopper, older drivers or nvidia-ml-py)."""
        nvml = self._nvml
        if uuid not in self._gpm_supported:
            support = self._optional("nvmlGpmQueryDeviceSupport", handle)
            self._gpm_supported[uuid] = bool(support is not None and support.isSupportedDevice)
        if not self._gpm_supported[uuid]:
            return {}
        now = self._clock()
        previous = self._gpm_samples.get(uuid)
        if previous is not None and now - previous[1] < GPM_MIN_INTERVAL_S:
            return self._gpm_last.get(uuid, {})
        sample = self._optional("nvmlGpmSampleAlloc")
        if sample is None:
            return {}
        if self._optional("nvmlGpmSampleGet", handle, sample) is None:
            nvml.nvmlGpmSampleFree(sample)
            return {}
        self._gpm_samples[uuid] = (sample, now)
        if previous is None:
            return {}
        try:
            values = self._gpm_metrics(previous[0], sample)
        finally:
            nvml.nvmlGpmSampleFree(previous[0])
        self._gpm_last[uuid] = values
        return values

    def _gpm_metrics(self, first: Any, second: Any) -> dict[str, float]:
        nvml = self._nvml
        request = nvml.c_nvmlGpmMetricsGet_t()
        request.version = nvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(PROF_METRICS)
        request.sample1 = first
        request.sample2 = second
        for i, (_help, metric) in enumerate(PROF_METRICS.values()):
            request.metrics[i].metricId = getattr(nvml, metric)
        if self._optional("nvmlGpmMetricsGet", request) is None:
            return {}
        return {
            name: request.metrics[i].value / 100  # NVML reports percent, DCGM a ratio
            for i, name in enumerate(PROF_METRICS)
            if request.metrics[i].nvmlReturn == nvml.NVML_SUCCESS
        }

    def _field_value(self, handle: Any, field_id: int) -> float | None:
        """One NVML field (the memory temperature has no dedicated query)."""
        nvml = self._nvml
        result = self._optional("nvmlDeviceGetFieldValues", handle, [field_id])
        if not result or result[0].nvmlReturn != nvml.NVML_SUCCESS:
            return None
        value = result[0].value
        member = {
            nvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
            nvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
            nvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
            nvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
            nvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
        }.get(result[0].valueType, "siVal")
        return float(getattr(value, member))

    def _mig_devices(self, handle: Any, parent_name: str) -> list[tuple[str, Any, str | None, int | None]]:
        nvml = self._nvml
        mode = self._optional("nvmlDeviceGetMigMode", handle)
        if not mode or mode[0] != nvml.NVML_DEVICE_MIG_ENABLE:
            return []
        devices = []
        for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError:
                continue  # empty slot
            gi_id = self._optional("nvmlDeviceGetGpuInstanceId", mig)
            profile = _mig_profile(nvml, handle, _text(nvml.nvmlDeviceGetName(mig)), gi_id)
            devices.append((_text(nvml.nvmlDeviceGetUUID(mig)), mig, profile, gi_id))
        return devices


def _memory_values(memory: MemoryReading) -> dict[str, float]:
    """DCGM's frame-buffer fields: FB_RESERVED only where the driver reports the reservation apart."""
    values = {"DCGM_FI_DEV_FB_USED": memory.used, "DCGM_FI_DEV_FB_FREE": memory.free}
    if memory.reserved is not None:
        values["DCGM_FI_DEV_FB_RESERVED"] = memory.reserved
    return values


def _families(samples: list[_Sample]) -> Iterator[Metric]:
    prof = {name: (help_text, "gauge") for name, (help_text, _metric) in PROF_METRICS.items()}
    for name, (help_text, kind) in {**GPU_METRICS, **prof}.items():
        rows = [s for s in samples if name in s.values]
        if not rows:
            continue
        family = GaugeMetricFamily(name, help_text) if kind == "gauge" else Metric(name, help_text, kind)
        for row in rows:
            family.add_sample(name, row.labels, row.values[name])
        yield family
