"""Does kgpu's GPU exporter agree with nvidia-smi? Paired readings on a machine with an NVIDIA GPU.

Every second it scrapes the exporter (the same collector `/metrics` serves, through prometheus_client's
text format) and runs `nvidia-smi --query-gpu`, in alternating order so neither always reads first.
In the middle of the window a bf16 matmul loop keeps GPU 0 busy (`--no-load` to skip), so utilization,
power, clocks and temperature move while they are compared. Prints one row per quantity and GPU
(medians, the median and largest difference, the tolerance and a verdict) and writes every reading to
JSON.

    python3 -m bench.gpu_telemetry [--samples 20] [--interval 1] [--out bench/results/gpu-telemetry.json]

Tolerances ("normal sampling differences"): the two tools read the same NVML counters a few tens of
milliseconds apart, so memory and reserved memory agree to a few MiB, temperature to 1 C; power is a
one-second average that moves under load (10 W or 5 %), utilization a sampled percentage (10 points),
the SM clock moves with boost (5 %). A verdict uses the median difference; the largest one is shown.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from kgpu.telemetry.gpu_exporter import GPUExporter

RESULTS = Path(__file__).parent / "results"


@dataclass(frozen=True)
class Quantity:
    name: str
    metric: str  # the exporter's DCGM name
    smi_field: str  # nvidia-smi --query-gpu field
    abs_tolerance: float
    rel_tolerance: float = 0.0  # of nvidia-smi's value; the larger of the two applies

    def tolerance(self, reference: float) -> float:
        return max(self.abs_tolerance, self.rel_tolerance * abs(reference))


QUANTITIES = (
    Quantity("utilization %", "DCGM_FI_DEV_GPU_UTIL", "utilization.gpu", 10),
    Quantity("memory used MiB", "DCGM_FI_DEV_FB_USED", "memory.used", 16),
    Quantity("memory reserved MiB", "DCGM_FI_DEV_FB_RESERVED", "memory.reserved", 2),
    Quantity("power W", "DCGM_FI_DEV_POWER_USAGE", "power.draw", 10, 0.05),
    Quantity("temperature C", "DCGM_FI_DEV_GPU_TEMP", "temperature.gpu", 1),
    Quantity("SM clock MHz", "DCGM_FI_DEV_SM_CLOCK", "clocks.sm", 0, 0.05),
)

# uuid -> quantity name -> value (None: that side did not report it)
Reading = dict[str, dict[str, float | None]]
Runner = Callable[[list[str]], str]


def exporter_reading(registry: CollectorRegistry) -> Reading:
    """Whole-GPU values from one scrape in Prometheus' text format (MIG device series are left out)."""
    by_metric = {q.metric: q.name for q in QUANTITIES}
    reading: Reading = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            name = by_metric.get(sample.name)
            if name is None or sample.labels.get("GPU_I_ID"):
                continue
            reading.setdefault(sample.labels["UUID"], {})[name] = sample.value
    return reading


def _run(command: list[str]) -> str:
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=True).stdout


def smi_fields(run: Runner = _run) -> list[Quantity]:
    """The quantities this driver's nvidia-smi can query (memory.reserved is R510 and later)."""
    supported = run(["nvidia-smi", "--help-query-gpu"])
    return [q for q in QUANTITIES if f'"{q.smi_field}"' in supported]


def smi_reading(fields: Sequence[Quantity], run: Runner = _run) -> Reading:
    """One `nvidia-smi --query-gpu` call: values per GPU UUID ("[N/A]" and the like become None)."""
    query = ",".join(["uuid", *(q.smi_field for q in fields)])
    output = run(["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"])
    reading: Reading = {}
    for line in output.strip().splitlines():
        uuid, *values = (v.strip() for v in line.split(","))
        reading[uuid] = {q.name: _number(v) for q, v in zip(fields, values, strict=True)}
    return reading


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None  # [N/A], [Not Supported]


def compare(pairs: Sequence[tuple[Reading, Reading]]) -> list[dict]:
    """One row per GPU and quantity both sides reported: medians, differences, tolerance, verdict."""
    rows = []
    uuids = sorted({uuid for exporter, smi in pairs for uuid in exporter.keys() & smi.keys()})
    for uuid in uuids:
        for q in QUANTITIES:
            both = [
                (exporter[uuid][q.name], smi[uuid][q.name])
                for exporter, smi in pairs
                if exporter.get(uuid, {}).get(q.name) is not None
                and smi.get(uuid, {}).get(q.name) is not None
            ]
            if not both:
                continue
            diffs = [abs(e - s) for e, s in both]
            reference = statistics.median(s for _, s in both)
            tolerance = q.tolerance(reference)
            median_diff = statistics.median(diffs)
            rows.append(
                {
                    "gpu": uuid,
                    "quantity": q.name,
                    "pairs": len(both),
                    "exporter_median": statistics.median(e for e, _ in both),
                    "nvidia_smi_median": reference,
                    "median_abs_diff": median_diff,
                    "max_abs_diff": max(diffs),
                    "tolerance": tolerance,
                    "verdict": "PASS" if median_diff <= tolerance else "MISS",
                }
            )
    return rows


class MatmulLoad:
    """bf16 matmuls on GPU 0 in a background thread while ``on`` is set."""

    def __init__(self) -> None:
        import torch

        self._torch = torch
        self.on = threading.Event()
        self._stop = threading.Event()
        self._a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self.on.wait(0.05):
                continue
            for _ in range(20):
                self._a @ self._a
            self._torch.cuda.synchronize()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def collect(
    registry: CollectorRegistry,
    samples: int,
    interval_s: float,
    run: Runner = _run,
    load: MatmulLoad | None = None,
    progress: Callable[[int, Reading, Reading], None] = lambda i, e, s: None,
) -> list[tuple[Reading, Reading]]:
    """``samples`` paired readings of the exporter in ``registry`` and nvidia-smi; the load (if any)
    runs through the middle half of them."""
    fields = smi_fields(run)
    pairs = []
    for i in range(samples):
        if load is not None:
            (load.on.set if samples // 4 <= i < samples - samples // 4 else load.on.clear)()
        if i % 2 == 0:
            exported, smi = exporter_reading(registry), smi_reading(fields, run)
        else:
            smi = smi_reading(fields, run)
            exported = exporter_reading(registry)
        pairs.append((exported, smi))
        progress(i, exported, smi)
        if i + 1 < samples:
            time.sleep(interval_s)
    return pairs


def results_table(rows: list[dict]) -> Table:
    table = Table(title="kgpu GPU exporter vs nvidia-smi --query-gpu")
    for column in (
        "GPU",
        "quantity",
        "pairs",
        "exporter",
        "nvidia-smi",
        "median |diff|",
        "max |diff|",
        "tol",
    ):
        table.add_column(column, justify="left" if column in ("GPU", "quantity") else "right")
    table.add_column("verdict")
    for r in rows:
        table.add_row(
            r["gpu"][:12],
            r["quantity"],
            str(r["pairs"]),
            f"{r['exporter_median']:g}",
            f"{r['nvidia_smi_median']:g}",
            f"{r['median_abs_diff']:g}",
            f"{r['max_abs_diff']:g}",
            f"{r['tolerance']:g}",
            r["verdict"],
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between paired readings")
    parser.add_argument("--no-load", action="store_true", help="do not run the matmul load in the middle")
    parser.add_argument("--out", type=Path, default=RESULTS / "gpu-telemetry.json")
    args = parser.parse_args(argv)
    console = Console()
    exporter = GPUExporter(hostname="bench")
    registry = CollectorRegistry()
    registry.register(exporter)
    if not exporter_reading(registry):
        console.print(f"no NVIDIA GPU to compare: {exporter.unavailable_reason}", markup=False)
        return 1
    load = None if args.no_load else MatmulLoad()

    def progress(i: int, exported: Reading, smi: Reading) -> None:
        first = next(iter(smi), None)
        if first is not None:
            e, s = exported.get(first, {}), smi[first]
            console.print(
                f"[{i + 1}/{args.samples}] load {'on ' if load and load.on.is_set() else 'off'} "
                f"util {e.get('utilization %')}/{s.get('utilization %')}  "
                f"power {e.get('power W')}/{s.get('power W')}  "
                f"mem {e.get('memory used MiB')}/{s.get('memory used MiB')}  (exporter/nvidia-smi)",
                markup=False,
            )

    try:
        pairs = collect(registry, args.samples, args.interval, load=load, progress=progress)
    finally:
        if load is not None:
            load.close()
        exporter.close()
    rows = compare(pairs)
    console.print(results_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"rows": rows, "pairs": pairs}, indent=2))
    console.print(f"wrote {args.out}")
    return 0 if rows and all(r["verdict"] == "PASS" for r in rows) else 2


if __name__ == "__main__":
    sys.exit(main())
