"""bench/gpu_telemetry.py's comparison, driven by the fake NVML and a stand-in for nvidia-smi.

The real comparison needs an NVIDIA GPU; here nvidia-smi is replaced by a function printing what
`nvidia-smi --query-gpu=... --format=csv,noheader,nounits` prints (its CSV layout, "[N/A]" for values a
GPU does not report), so the parsing, pairing and verdicts are checked against that format.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bench import gpu_telemetry as bench
from kgpu.telemetry.gpu_exporter import GPUExporter
from tests.telemetry.fake_nvml import FakeNVML

HELP_QUERY_GPU = """List of valid properties to query for the switch "--query-gpu=":
"uuid"
"utilization.gpu"
"memory.used"
"memory.reserved"
"power.draw"
"temperature.gpu"
"clocks.sm" or "clocks.current.sm"
"""


def stand_in_nvidia_smi(rows: dict[str, dict[str, str]], help_text: str = HELP_QUERY_GPU):
    """Answers `--help-query-gpu` and `--query-gpu=uuid,...` like nvidia-smi, from ``rows``."""
    calls = []

    def run(command: list[str]) -> str:
        calls.append(command)
        assert command[0] == "nvidia-smi"
        if command[1] == "--help-query-gpu":
            return help_text
        query = command[1].removeprefix("--query-gpu=").split(",")
        assert command[2] == "--format=csv,noheader,nounits" and query[0] == "uuid"
        return "".join(
            ", ".join([uuid, *(values.get(f, "[N/A]") for f in query[1:])]) + "\n"
            for uuid, values in rows.items()
        )

    return run, calls


# What nvidia-smi would print for the fake NVML's two H200s (GPU-1 is in MIG mode: no utilization).
AGREEING = {
    "GPU-0": {
        "utilization.gpu": "35", "memory.used": "1024", "memory.reserved": "552", "power.draw": "121.80",
        "temperature.gpu": "41", "clocks.sm": "1980",
    },
    "GPU-1": {"memory.used": "2048", "power.draw": "80.00", "temperature.gpu": "30", "clocks.sm": "345"},
}  # fmt: skip


def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    reg.register(GPUExporter(nvml=FakeNVML(), hostname="node-a"))
    return reg


def test_exporter_and_a_stand_in_nvidia_smi_in_its_csv_format_agree_within_tolerance():
    run, calls = stand_in_nvidia_smi(AGREEING)
    pairs = bench.collect(registry(), samples=4, interval_s=0, run=run)
    assert len(pairs) == 4 and len(calls) == 1 + 4  # the field list once, then one query per sample
    rows = {(r["gpu"], r["quantity"]): r for r in bench.compare(pairs)}
    assert {q for g, q in rows if g == "GPU-0"} == {q.name for q in bench.QUANTITIES}
    # GPU-1: no utilization in MIG mode, and this driver path reports no reservation.
    assert {q for g, q in rows if g == "GPU-1"} == {
        "memory used MiB",
        "power W",
        "temperature C",
        "SM clock MHz",
    }
    assert all(r["verdict"] == "PASS" and r["pairs"] == 4 for r in rows.values())
    power = rows[("GPU-0", "power W")]
    assert power["exporter_median"] == 123.456 and power["nvidia_smi_median"] == 121.8
    assert round(power["median_abs_diff"], 3) == 1.656 and power["tolerance"] == 10
    assert rows[("GPU-0", "SM clock MHz")]["tolerance"] == 0.05 * 1980


def test_memory_counted_with_the_driver_reservation_is_a_miss():
    """What an exporter reading NVML's v1 "used" would show against nvidia-smi: 552 MiB too much."""
    counted = {**AGREEING, "GPU-0": {**AGREEING["GPU-0"], "memory.used": str(1024 - 552)}}
    run, _ = stand_in_nvidia_smi(counted)
    rows = {(r["gpu"], r["quantity"]): r for r in bench.compare(bench.collect(registry(), 2, 0, run=run))}
    memory = rows[("GPU-0", "memory used MiB")]
    assert memory["verdict"] == "MISS" and memory["median_abs_diff"] == 552
    assert rows[("GPU-0", "temperature C")]["verdict"] == "PASS"


def test_a_driver_without_memory_reserved_is_not_asked_for_it():
    older = HELP_QUERY_GPU.replace('"memory.reserved"\n', "")
    run, calls = stand_in_nvidia_smi(AGREEING, help_text=older)
    rows = bench.compare(bench.collect(registry(), 1, 0, run=run))
    assert "memory.reserved" not in calls[1][1]
    assert "memory reserved MiB" not in {r["quantity"] for r in rows}
