"""Autoscaling replay: every policy on the Azure LLM trace at its real timing, virtual clock.

Prints a table, writes bench/results/replay.json and, when matplotlib is installed (the
`bench` extra), bench/results/replay.png with replicas and gateway queue over time.

    .venv/bin/python -m bench.replay [--trace FILE] [--queue deadline|fifo] [--container-concurrency N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console

from kgpu.cli.replay import add_gateway_arguments, gateway_model, plot_timelines, results_table, run_policy
from kgpu.sim.azure_trace import DEFAULT_TRACE, TraceError, load_azure_trace
from kgpu.sim.replay import POLICIES, VARIANTS, default_spec

RESULTS = Path(__file__).parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--out", type=Path, default=RESULTS / "replay.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "replay.png")
    add_gateway_arguments(parser)
    args = parser.parse_args()
    model = gateway_model(parser, args)
    console = Console()
    try:
        trace = load_azure_trace(args.trace)
    except TraceError as exc:
        console.print(f"error: {exc}", markup=False)
        return 1
    results, seconds = [], {}
    for policy in (*POLICIES, *VARIANTS):
        started = time.perf_counter()
        results.append(run_policy(trace, policy, model=model))
        seconds[policy] = time.perf_counter() - started
    by_name = {r.policy: r for r in results}
    static = by_name["static"]
    title = f"replay: {len(trace)} requests over {trace[-1].arrival_s:.0f} s, {args.queue} queue"
    if args.container_concurrency:
        title += f", containerConcurrency {args.container_concurrency}"
    console.print(results_table(results, title))
    for r in results:
        if r.policy != "static":
            console.print(f"{r.policy}: {100 * r.gpu_hours / static.gpu_hours:.1f}% of static's GPU-hours")

    kgpu = by_name["kgpu"]
    targets = {
        "kgpu_slo_ge_99": kgpu.slo_attainment_pct >= 99.0,
        "kgpu_no_failed": kgpu.failed_requests == 0,
        "kgpu_gpu_hours_le_70pct_static": kgpu.gpu_hours <= 0.7 * static.gpu_hours,
    }
    for other in ("kpa", "hpa"):
        o = by_name[other]
        better_slo = kgpu.slo_attainment_pct > o.slo_attainment_pct and kgpu.gpu_hours <= o.gpu_hours
        better_gpu = kgpu.gpu_hours < o.gpu_hours and kgpu.slo_attainment_pct >= o.slo_attainment_pct
        targets[f"kgpu_dominates_{other}"] = better_slo or better_gpu
    for name, met in targets.items():
        console.print(f"target {name}: {'met' if met else 'MISSED'}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "trace": str(args.trace),
        "service_model": model.__dict__,
        "settings": {p: default_spec(p, model).model_dump() for p in ("kgpu", "kpa", "hpa", *VARIANTS)},
        "results": [r.to_dict() for r in results],
        "targets": targets,
        "seconds": seconds,
    }
    args.out.write_text(json.dumps(payload, indent=2))
    console.print(f"wrote {args.out}")
    try:
        plot_timelines([r for r in results if r.policy in POLICIES], args.plot)
        console.print(f"wrote {args.plot}")
    except TraceError as exc:
        console.print(f"no plot: {exc}", markup=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
