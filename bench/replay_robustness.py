"""Autoscaling replay on parts and rescalings of the trace: is a policy's result more than a fit to it?

For each gateway model (no limit; ``containerConcurrency`` 8) and each trace variant (the full
trace, its first and second halves by arrival time, arrival times scaled by 0.8 (more load) and by
1.25 (less)), replays ``static`` (its replica count searched again on every variant), ``kpa``,
``hpa``, ``kgpu``, ``kgpu-min4`` and the candidate settings below, and checks the targets: SLO
>= 99% with no failed request, GPU-hours <= 70% of static's, and better than ``kpa`` and ``hpa``
on one of SLO and GPU-hours without being worse on the other. Prints one table per model and
variant and writes bench/results/replay_robustness.json.

    .venv/bin/python -m bench.replay_robustness [--candidates NAME ...] [--grid main|headroom] [--variants NAME ...]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

from kgpu.sim.azure_trace import DEFAULT_TRACE, load_azure_trace
from kgpu.sim.hold_tuning import HoldTuning
from kgpu.sim.replay import ReplayResult, ServiceModel, default_spec, find_static, replay
from kgpu.sim.trace_versions import trace_version

RESULTS = Path(__file__).parent / "results"
MODELS = {"no-limit": ServiceModel(), "cc8": ServiceModel(container_concurrency=8)}
VARIANTS = ("full", "first-half", "second-half", "x0.8", "x1.25")
BASELINES = ("kpa", "hpa", "kgpu", "kgpu-min4")


def _throughput(model: ServiceModel) -> float:
    """Work units/s one replica serves at its full-speed batch: a property of the model server."""
    return model.units_per_s * model.full_speed_batch


def _tuning(
    signal: str, memory: str, seconds: float, thr: float, slack_s: float = 2.0, reactive: str = "concurrency"
) -> HoldTuning:
    return HoldTuning(
        signal=signal,  # type: ignore[arg-type]
        half_life_s=seconds if memory == "decay" else None,
        replica_throughput=thr if signal == "work" or reactive == "deadline" else None,
        slack_s=slack_s,
        reactive=reactive,  # type: ignore[arg-type]
    )


def grid(model: ServiceModel) -> dict[str, tuple[dict, HoldTuning | None]]:
    """Every setting tried: demand now by request count or by work against deadlines ("dl-"),
    burst memory signal x floor x (fixed window | half-life)."""
    thr = _throughput(model)
    out: dict[str, tuple[dict, HoldTuning | None]] = {}
    signals = (("conc", "concurrency", 2.0), ("work", "work", 2.0), ("work-s8", "work", 8.0))
    for (label, signal, slack), reactive in itertools.product(signals, ("concurrency", "deadline")):
        if reactive == "deadline":
            label = f"dl-{label}"
        for floor in (3, 4):
            for memory, seconds in (
                ("hold", 150),
                ("hold", 300),
                ("hold", 450),
                ("hold", 600),
                ("decay", 180),
                ("decay", 360),
                ("decay", 720),
            ):
                changes: dict = {"min_replicas": floor}
                if memory == "hold":
                    changes["scale_down_stabilization_seconds"] = float(seconds)
                out[f"{label}-{memory}{seconds}-min{floor}"] = (
                    changes,
                    _tuning(signal, memory, seconds, thr, slack, reactive),
                )
    return out


def headroom_grid(model: ServiceModel) -> dict[str, tuple[dict, HoldTuning | None]]:
    """The work memory (slack 8 s) held at 1.25-1.75 times the largest burst remembered."""
    thr = _throughput(model)
    out: dict[str, tuple[dict, HoldTuning | None]] = {}
    for memory, seconds in (("hold", 300), ("hold", 600), ("decay", 300), ("decay", 600)):
        for floor in (3, 4):
            for headroom in (1.25, 1.5, 1.75):
                changes: dict = {"min_replicas": floor, "scale_down_stabilization_seconds": float(seconds)}
                tuning = HoldTuning(
                    signal="work",
                    half_life_s=float(seconds) if memory == "decay" else None,
                    replica_throughput=thr,
                    slack_s=8.0,
                    headroom=headroom,
                )
                out[f"work-s8-{memory}{seconds}-min{floor}-x{headroom}"] = (changes, tuning)
    return out


# The candidates reported (see --grid for every setting): a decaying memory of concurrency; the
# cheapest work-signal settings at >= 99% SLO on the full trace; the cheapest work-signal setting;
# deadline sizing of the demand now with kgpu's memory, the two settings at >= 99% on the full trace.
CANDIDATES = (
    "conc-decay360-min3",
    "work-hold450-min3",
    "work-decay720-min3",
    "work-s8-decay180-min4",
    "dl-conc-hold300-min4",
    "dl-conc-hold600-min3",
)


def candidates(model: ServiceModel) -> dict[str, tuple[dict, HoldTuning | None]]:
    return {**grid(model), **headroom_grid(model)}


def _run(job: tuple) -> tuple[str, str, str, dict]:
    model_name, variant, policy, trace_path = job
    model = MODELS[model_name]
    trace = trace_version(load_azure_trace(trace_path), variant)
    if policy == "static":
        result: ReplayResult = find_static(trace, model)
    elif policy in BASELINES:
        result = replay(trace, policy, model)
    else:
        changes, tuning = candidates(model)[policy]
        spec = default_spec("kgpu", model).model_copy(update=changes)
        result = replay(trace, "kgpu", model, spec=spec, tuning=tuning)
        result.policy = policy
    data = result.to_dict()
    data.pop("policy")
    return model_name, variant, policy, data


def targets(row: dict, by: dict[str, dict]) -> dict[str, bool]:
    static = by["static"]
    met = {
        "slo99": row["slo_attainment_pct"] >= 99.0 and row["failed_requests"] == 0,
        "le70": row["gpu_hours"] <= 0.7 * static["gpu_hours"],
    }
    for other in ("kpa", "hpa"):
        o = by[other]
        better_slo = (
            row["slo_attainment_pct"] > o["slo_attainment_pct"] and row["gpu_hours"] <= o["gpu_hours"]
        )
        better_gpu = (
            row["gpu_hours"] < o["gpu_hours"] and row["slo_attainment_pct"] >= o["slo_attainment_pct"]
        )
        met[f"beats_{other}"] = better_slo or better_gpu
    return met


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--candidates", nargs="*", default=None, help="candidate names (default: CANDIDATES)")
    parser.add_argument(
        "--grid",
        choices=("main", "headroom"),
        default=None,
        help="every setting of grid() or of headroom_grid() instead of CANDIDATES",
    )
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_robustness.json")
    args = parser.parse_args()
    names = list(CANDIDATES) if args.candidates is None else args.candidates
    if args.grid:
        names = list((grid if args.grid == "main" else headroom_grid)(ServiceModel()))
    unknown = set(names) - set(candidates(ServiceModel()))
    if unknown:
        parser.error(f"unknown candidates: {', '.join(sorted(unknown))}")
    policies = ["static", *BASELINES, *names]
    jobs = [(m, v, p, args.trace) for m in args.models for v in args.variants for p in policies]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        done = list(pool.map(_run, jobs))
    results: dict[str, dict[str, dict[str, dict]]] = {}
    for model_name, variant, policy, data in done:
        results.setdefault(model_name, {}).setdefault(variant, {})[policy] = data
    console = Console(width=140)
    for model_name, per_variant in results.items():
        for variant, by in per_variant.items():
            static = by["static"]
            table = Table(title=f"{model_name}, {variant}: static x{static.get('replicas')}")
            for header in ("policy", "SLO met", "failed", "GPU-h", "% static", "targets"):
                table.add_column(header, justify="left" if header in ("policy", "targets") else "right")
            for policy, row in by.items():
                met = targets(row, by) if policy != "static" else {}
                row["targets"] = met
                flags = " ".join(k for k, v in met.items() if v)
                if met and all(met.values()):
                    flags = "ALL"
                table.add_row(
                    policy,
                    f"{row['slo_attainment_pct']:.2f}%",
                    str(row["failed_requests"]),
                    f"{row['gpu_hours']:.2f}",
                    f"{100 * row['gpu_hours'] / static['gpu_hours']:.1f}%",
                    flags,
                )
            console.print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"trace": str(args.trace), "results": results}, indent=1))
    console.print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
