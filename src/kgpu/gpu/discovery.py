"""What this node has: host facts plus NVIDIA GPUs and MIG devices read through NVML.

``discover()`` never raises: without a driver (or without nvidia-ml-py) it returns
an inventory with no GPUs and a note saying why, so callers fall back to the CPU.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

from kgpu.gpu.catalog import all_models, model_for_product_name

_MIB = 1024 * 1024
# MIG device names end with their profile, e.g. "NVIDIA H200 MIG 3g.71gb".
_MIG_PROFILE_IN_NAME = re.compile(r"(\d+g\.\d+gb(?:\+me)?)\s*$")


@dataclass
class MigDevice:
    uuid: str
    profile: str | None
    gpu_instance_id: int | None
    memory_total_mib: int
    # Where the GPU instance sits on the GPU's memory slices (None when NVML would not say).
    placement_start: int | None = None
    placement_size: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class GPUDevice:
    index: int
    uuid: str
    name: str
    catalog_model: str | None
    memory_total_mib: int
    memory_used_mib: int
    utilization_gpu_pct: int | None
    mig_enabled: bool
    mig_devices: list[MigDevice] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class NodeInventory:
    hostname: str
    cpu_count: int
    memory_mib: int
    driver_version: str | None
    gpus: list[GPUDevice]
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _cpu_count() -> int:
    # The CPUs this process may run on (cgroup/affinity aware), not every CPU of the host.
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _memory_mib() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // _MIB
    except (ValueError, OSError, AttributeError):
        return 0


def _text(value: str | bytes) -> str:
    # Older nvidia-ml-py releases return bytes for names, UUIDs and versions.
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(nvml: ModuleType, fn_name: str, *args: Any) -> Any:
    """Call an NVML query that some GPUs or modes do not support; None when it fails."""
    try:
        return getattr(nvml, fn_name)(*args)
    except (nvml.NVMLError, AttributeError):
        return None


@dataclass(frozen=True)
class MemoryReading:
    """Frame buffer of a GPU or MIG device, in MiB.

    ``used`` is what processes allocated, without what the driver and firmware reserve: nvidia-smi's
    "Used" and DCGM's FB_USED (drivers from R510 report the reservation apart). ``reserved`` is None
    on drivers without ``nvmlDeviceGetMemoryInfo_v2``; ``used`` then includes it, as NVML's v1 says.
    """

    total: int
    used: int
    free: int
    reserved: int | None


def read_memory(nvml: ModuleType, handle: Any) -> MemoryReading | None:
    """The device's memory through NVML's v2 query, else v1; None when neither answers."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    memory = _optional(nvml, "nvmlDeviceGetMemoryInfo", handle, version) if version else None
    if memory is not None:
        return MemoryReading(
            memory.total // _MIB, memory.used // _MIB, memory.free // _MIB, memory.reserved // _MIB
        )
    memory = _optional(nvml, "nvmlDeviceGetMemoryInfo", handle)
    if memory is None:
        return None
    return MemoryReading(memory.total // _MIB, memory.used // _MIB, memory.free // _MIB, None)


def _mig_profile(nvml: ModuleType, parent: Any, name: str, gi_id: int | None) -> str | None:
    match = _MIG_PROFILE_IN_NAME.search(name)
    if match:
        return match.group(1)
    # Fall back to the GPU instance's NVML profile id, mapped through the catalog.
    if gi_id is None:
        return None
    instance = _optional(nvml, "nvmlDeviceGetGpuInstanceById", parent, gi_id)
    info = _optional(nvml, "nvmlGpuInstanceGetInfo", instance) if instance is not None else None
    if info is None:
        return None
    parent_model = model_for_product_name(_text(nvml.nvmlDeviceGetName(parent)))
    candidates = [parent_model] if parent_model else all_models()
    for model in candidates:
        for profile in model.mig_profiles:
            if profile.nvml_profile_id == info.profileId:
                return profile.name
    return None


def _mig_placement(nvml: ModuleType, parent: Any, gi_id: int | None) -> tuple[int | None, int | None]:
    """(start, size) of a GPU instance's memory slices; (None, None) when NVML does not tell
    (the GPU-instance queries need privileges some hosts do not grant)."""
    if gi_id is None:
        return None, None
    instance = _optional(nvml, "nvmlDeviceGetGpuInstanceById", parent, gi_id)
    info = _optional(nvml, "nvmlGpuInstanceGetInfo", instance) if instance is not None else None
    placement = getattr(info, "placement", None)
    if placement is None:
        return None, None
    return int(placement.start), int(placement.size)


def _mig_devices(nvml: ModuleType, handle: Any) -> list[MigDevice]:
    devices = []
    for slot in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except nvml.NVMLError:
            continue  # empty slot: fewer instances than the maximum
        name = _text(nvml.nvmlDeviceGetName(mig))
        gi_id = _optional(nvml, "nvmlDeviceGetGpuInstanceId", mig)
        memory = read_memory(nvml, mig)
        start, size = _mig_placement(nvml, handle, gi_id)
        devices.append(
            MigDevice(
                uuid=_text(nvml.nvmlDeviceGetUUID(mig)),
                profile=_mig_profile(nvml, handle, name, gi_id),
                gpu_instance_id=gi_id,
                memory_total_mib=memory.total if memory is not None else 0,
                placement_start=start,
                placement_size=size,
            )
        )
    return devices


def _read_gpu(nvml: ModuleType, index: int) -> GPUDevice:
    handle = nvml.nvmlDeviceGetHandleByIndex(index)
    name = _text(nvml.nvmlDeviceGetName(handle))
    memory = read_memory(nvml, handle)
    utilization = _optional(nvml, "nvmlDeviceGetUtilizationRates", handle)  # unsupported in MIG mode
    mig_mode = _optional(nvml, "nvmlDeviceGetMigMode", handle)  # NotSupported on pre-Ampere GPUs
    mig_enabled = bool(mig_mode) and mig_mode[0] == nvml.NVML_DEVICE_MIG_ENABLE
    model = model_for_product_name(name)
    return GPUDevice(
        index=index,
        uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
        name=name,
        catalog_model=model.name if model else None,
        memory_total_mib=memory.total if memory is not None else 0,
        memory_used_mib=memory.used if memory is not None else 0,
        utilization_gpu_pct=utilization.gpu if utilization is not None else None,
        mig_enabled=mig_enabled,
        mig_devices=_mig_devices(nvml, handle) if mig_enabled else [],
    )


def _query_nvml(nvml: ModuleType) -> tuple[str | None, list[GPUDevice], str]:
    try:
        nvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded and kin
        return None, [], f"no NVIDIA driver (NVML: {exc}); serving on CPU"
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = [_read_gpu(nvml, i) for i in range(nvml.nvmlDeviceGetCount())]
    except Exception as exc:
        return None, [], f"NVML query failed ({exc}); serving on CPU"
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:
            pass  # nothing useful to do if shutdown fails; the readout is complete
    if not gpus:
        return driver, [], f"NVIDIA driver {driver} loaded but no GPUs visible; serving on CPU"
    return driver, gpus, f"{len(gpus)} NVIDIA GPU(s), driver {driver}"


def discover(nvml: ModuleType | None = None) -> NodeInventory:
    """Inventory of this node; ``nvml`` replaces the ``pynvml`` module (tests pass a stand-in)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            nvml = None
    if nvml is None:
        driver, gpus, note = None, [], "nvidia-ml-py (pynvml) is not installed; serving on CPU"
    else:
        driver, gpus, note = _query_nvml(nvml)
    return NodeInventory(
        hostname=socket.gethostname(),
        cpu_count=_cpu_count(),
        memory_mib=_memory_mib(),
        driver_version=driver,
        gpus=gpus,
        note=note,
    )
