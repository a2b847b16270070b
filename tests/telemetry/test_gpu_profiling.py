"""DCGM profiling metrics from NVML GPM samples taken between scrapes.

NVML needs an NVIDIA driver, so these drive the exporter through FakeNVML, whose GPM functions follow
nvidia-ml-py's real signatures and fill its real ctypes structs.
"""

from __future__ import annotations

import inspect

import pynvml
import pytest

from kgpu.telemetry.gpu_exporter import GPM_MIN_INTERVAL_S, PROF_METRIC_NAMES, DeviceUser, GPUExporter
from tests.telemetry.fake_nvml import FakeNVML
from tests.telemetry.test_gpu_exporter import one, scrape

ACTIVITY = {
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: 80.0,
    pynvml.NVML_GPM_METRIC_SM_UTIL: 62.5,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 30.0,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 40.0,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 25.0,
}
RATIOS = {
    "DCGM_FI_PROF_GR_ENGINE_ACTIVE": 0.8,
    "DCGM_FI_PROF_SM_ACTIVE": 0.625,
    "DCGM_FI_PROF_SM_OCCUPANCY": 0.3,
    "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE": 0.4,
    "DCGM_FI_PROF_DRAM_ACTIVE": 0.25,
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def prof(metrics: dict) -> dict[str, list]:
    return {name: series for name, series in metrics.items() if name in PROF_METRIC_NAMES}


def test_fake_nvml_gpm_uses_real_pynvml_structs_and_signatures() -> None:
    assert FakeNVML.c_nvmlGpmMetricsGet_t is pynvml.c_nvmlGpmMetricsGet_t
    for name in ("nvmlGpmQueryDeviceSupport", "nvmlGpmSampleAlloc", "nvmlGpmSampleGet", "nvmlGpmMetricsGet",
                 "nvmlGpmSampleFree"):  # fmt: skip
        fake = list(inspect.signature(getattr(FakeNVML, name)).parameters)[1:]
        assert fake == list(inspect.signature(getattr(pynvml, name)).parameters), name
    # A request for a freed sample is refused, as NVML refuses it.
    nvml = FakeNVML()
    sample = nvml.nvmlGpmSampleAlloc()
    nvml.nvmlGpmSampleFree(sample)
    with pytest.raises(pynvml.NVMLError):
        nvml.nvmlGpmSampleGet(nvml.gpus[0], sample)


def test_prof_metrics_from_gpm_samples_between_scrapes_with_fake_nvml() -> None:
    nvml, clock = FakeNVML(), Clock()
    users = [DeviceUser("default", "default/minilm", "minilm-0", gpu_index=0)]
    exporter = GPUExporter(lambda: users, nvml=nvml, hostname="node-a", clock=clock)
    nvml.gpm["GPU-0"] = dict(ACTIVITY)

    assert prof(scrape(exporter)) == {}  # GPM compares two samples: nothing on the first scrape
    clock.now += 15
    metrics = scrape(exporter)
    assert set(prof(metrics)) == PROF_METRIC_NAMES
    for name, ratio in RATIOS.items():
        assert one(metrics[name], gpu="0") == pytest.approx(ratio)  # NVML's percent as DCGM's ratio
        (labels,) = [labels for labels, _ in metrics[name]]  # GPU 1 has no GPM: no series for it
        assert labels["UUID"] == "GPU-0" and labels["service"] == "default/minilm"
        assert labels["replica"] == "minilm-0" and labels["Hostname"] == "node-a"

    # The next scrape reports the activity since this one; the older sample is freed.
    nvml.gpm["GPU-0"][pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL] = 90.0
    clock.now += 15
    metrics = scrape(exporter)
    assert one(metrics["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"], gpu="0") == pytest.approx(0.9)
    assert len(nvml.gpm_samples) == 1
    taken = nvml.gpm_taken

    # A scrape sooner than NVML's minimum sample spacing repeats the last values without sampling.
    clock.now += GPM_MIN_INTERVAL_S / 2
    metrics = scrape(exporter)
    assert one(metrics["DCGM_FI_PROF_PIPE_TENSOR_ACTIVE"], gpu="0") == pytest.approx(0.9)
    assert nvml.gpm_taken == taken

    exporter.close()
    assert nvml.gpm_samples == {}


def test_prof_metric_that_gpm_does_not_report_is_left_out_with_fake_nvml() -> None:
    nvml, clock = FakeNVML(), Clock()
    exporter = GPUExporter(nvml=nvml, hostname="node-a", clock=clock)
    nvml.gpm["GPU-0"] = {pynvml.NVML_GPM_METRIC_SM_UTIL: 50.0}
    scrape(exporter)
    clock.now += 15
    assert {name: [v for _, v in s] for name, s in prof(scrape(exporter)).items()} == {
        "DCGM_FI_PROF_SM_ACTIVE": [0.5]
    }


class NoGPM(FakeNVML):
    """A driver or GPU without GPM: NVML answers NOT_SUPPORTED."""

    def nvmlGpmQueryDeviceSupport(self, device: dict) -> pynvml.c_nvmlGpmSupport_t:
        raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)


def test_no_prof_metrics_and_no_gpm_sampling_where_gpm_is_unsupported_with_fake_nvml() -> None:
    unsupported = FakeNVML()
    unsupported.gpm = {}  # NVML answers, but no GPU supports GPM (isSupportedDevice == 0)
    for nvml in (NoGPM(), unsupported):
        clock = Clock()
        exporter = GPUExporter(nvml=nvml, hostname="node-a", clock=clock)
        for _ in range(3):
            metrics = scrape(exporter)
            clock.now += 15
            assert prof(metrics) == {}
            assert one(metrics["DCGM_FI_DEV_GPU_UTIL"], gpu="0") == 37  # the other metrics are unaffected
        assert nvml.gpm_taken == 0 and nvml.gpm_samples == {}
