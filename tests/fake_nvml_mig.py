"""MIG calls shared by the fake NVML modules of the tests (nvidia-ml-py's names and signatures).

A fake keeps its MIG devices in ``self.mig``, keyed by (parent key, MIG index), where the parent
key is the GPU handle's ``MIG_PARENT_KEY`` field; MIG device handles carry their GPU instance id
as ``gi``; a GPU handle in MIG mode has ``mig`` true.
"""

from __future__ import annotations

import pynvml


class FakeMigCalls:
    MIG_PARENT_KEY = "uuid"
    mig: dict[tuple[object, int], dict]

    def nvmlDeviceGetMigMode(self, device: dict) -> list[int]:
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if device.get("mig") else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetMaxMigDeviceCount(self, device: dict) -> int:
        return 7 if device.get("mig") else 0

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: dict, index: int) -> dict:
        try:
            return self.mig[(device[self.MIG_PARENT_KEY], index)]
        except KeyError:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND) from None

    def nvmlDeviceGetGpuInstanceId(self, device: dict) -> int:
        return device["gi"]
