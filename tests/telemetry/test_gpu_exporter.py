from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace

import pynvml
import pytest
import torch
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from kgpu.telemetry.gpu_exporter import GPU_METRIC_NAMES, DeviceUser, GPUExporter
from tests.telemetry.fake_nvml import FakeNVML


def scrape(exporter: GPUExporter) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(exporter)
    text = generate_latest(registry).decode()
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append((sample.labels, sample.value))
    return out


def one(series: list[tuple[dict[str, str], float]], **match: str) -> float:
    found = [v for labels, v in series if all(labels.get(k, "") == want for k, want in match.items())]
    assert len(found) == 1, (match, series)
    return found[0]


def test_fake_nvml_matches_real_pynvml_names_and_signatures() -> None:
    for name, method in inspect.getmembers(FakeNVML, inspect.isfunction):
        if name.startswith("nvml"):
            real = inspect.signature(getattr(pynvml, name))
            assert list(inspect.signature(method).parameters)[1:] == list(real.parameters), name
    for name in dir(FakeNVML):
        if name.startswith(("NVML_", "nvmlEventType")):
            assert getattr(FakeNVML, name) == getattr(pynvml, name), name


def test_exporter_with_fake_nvml_uses_dcgm_names_units_and_labels() -> None:
    users = [
        DeviceUser("default", "default/minilm", "minilm-0", gpu_index=0),
        DeviceUser("default", "default/minilm", "minilm-1", gpu_index=0),
        DeviceUser("team-a", "team-a/bge", "bge-0", mig_uuid="MIG-b"),
    ]
    metrics = scrape(GPUExporter(lambda: users, nvml=FakeNVML(), hostname="node-a"))
    assert set(metrics) == GPU_METRIC_NAMES  # every declared name is read from NVML
    labels, util = metrics["DCGM_FI_DEV_GPU_UTIL"][0]
    assert util == 37
    assert labels == {
        "gpu": "0", "UUID": "GPU-0", "pci_bus_id": "00000000:19:00.0", "device": "nvidia0",
        "modelName": "NVIDIA H200", "Hostname": "node-a",
        "project": "default", "service": "default/minilm", "replica": "minilm-0,minilm-1",
    }  # fmt: skip
    # As nvidia-smi and DCGM: used excludes what the driver reserves, which is reported apart.
    assert one(metrics["DCGM_FI_DEV_FB_USED"], gpu="0") == 1024  # MiB
    assert one(metrics["DCGM_FI_DEV_FB_RESERVED"], gpu="0") == 552
    assert one(metrics["DCGM_FI_DEV_FB_FREE"], gpu="0") == 143771 - 552 - 1024
    # A driver without the v2 query: used includes the reservation (NVML v1), no FB_RESERVED series.
    assert [lb["gpu"] for lb, _ in metrics["DCGM_FI_DEV_FB_RESERVED"]] == ["0"]
    assert one(metrics["DCGM_FI_DEV_FB_USED"], gpu="1", GPU_I_ID="") == 2048
    assert one(metrics["DCGM_FI_DEV_POWER_USAGE"], gpu="0") == pytest.approx(123.456)  # mW -> W
    assert one(metrics["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"], gpu="0") == 987654321  # mJ
    assert one(metrics["DCGM_FI_DEV_GPU_TEMP"], gpu="1") == 30
    assert one(metrics["DCGM_FI_DEV_MEMORY_TEMP"], gpu="0") == 39
    assert one(metrics["DCGM_FI_DEV_SM_CLOCK"], gpu="0") == 1980
    assert one(metrics["DCGM_FI_DEV_MEM_CLOCK"], gpu="1") == 3201
    assert one(metrics["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"], gpu="0") == 3
    assert one(metrics["DCGM_FI_DEV_XID_ERRORS"], gpu="0") == 0
    # A GPU in MIG mode reports no utilization; its MIG devices report their own memory.
    assert [lb["gpu"] for lb, _ in metrics["DCGM_FI_DEV_GPU_UTIL"]] == ["0"]
    assert one(metrics["DCGM_FI_DEV_FB_USED"], gpu="1", GPU_I_PROFILE="4g.71gb", GPU_I_ID="1") == 500
    assert one(metrics["DCGM_FI_DEV_FB_FREE"], gpu="1", GPU_I_PROFILE="4g.71gb") == 71424 - 500
    mig_b = [lb for lb, _ in metrics["DCGM_FI_DEV_FB_USED"] if lb.get("GPU_I_ID") == "2"]
    assert mig_b == [
        {
            "gpu": "1", "UUID": "GPU-1", "pci_bus_id": "00000000:3B:00.0", "device": "nvidia1",
            "modelName": "NVIDIA H200", "Hostname": "node-a", "GPU_I_PROFILE": "3g.71gb", "GPU_I_ID": "2",
            "project": "team-a", "service": "team-a/bge", "replica": "bge-0",
        }
    ]  # fmt: skip
    # The whole GPU names every replica on any of its MIG devices; an unused device names none.
    assert one(metrics["DCGM_FI_DEV_POWER_USAGE"], gpu="1", replica="bge-0") == 80
    assert one(metrics["DCGM_FI_DEV_FB_USED"], GPU_I_ID="1", replica="") == 500


def test_exporter_with_fake_nvml_reports_the_last_xid_error_and_reads_at_scrape_time() -> None:
    fake = FakeNVML()
    exporter = GPUExporter(nvml=fake, hostname="node-a")
    assert one(scrape(exporter)["DCGM_FI_DEV_XID_ERRORS"], gpu="0") == 0
    fake.pending_events += [
        SimpleNamespace(device=fake.gpus[0], eventType=pynvml.nvmlEventTypeXidCriticalError, eventData=79),
    ]
    fake.gpus[0]["util"] = 91
    metrics = scrape(exporter)
    assert one(metrics["DCGM_FI_DEV_XID_ERRORS"], gpu="0") == 79
    assert one(metrics["DCGM_FI_DEV_GPU_UTIL"], gpu="0") == 91
    assert fake.inits == 1 and fake.registered == ["GPU-0"]
    exporter.close()
    assert fake.shutdowns == 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only path; this machine has a GPU")
def test_cpu_only_machine_exports_no_gpu_series_and_says_so_once(caplog) -> None:
    exporter = GPUExporter(hostname="node-a")  # the real pynvml, no driver here
    with caplog.at_level(logging.INFO, logger="kgpu.telemetry"):
        assert scrape(exporter) == {}
        assert scrape(exporter) == {}
    notes = [r.getMessage() for r in caplog.records if r.name == "kgpu.telemetry"]
    assert len(notes) == 1 and notes[0].startswith("GPU metrics: none exported (no NVIDIA driver"), notes
    assert exporter.unavailable_reason is not None
