"""What the judged trace versions ask of any live policy, and what each ask costs on the full trace.

`bench/replay_matched.py` judges one kgpu setting on every version of the trace: >= 99% SLO with no
failed request on each, at <= 0.75x static's GPU-hours (and 0.85x KPA's and HPA's) on the full trace.
No setting tried meets all of it. This replays the asks one at a time, each with the most generous
rule that could meet it, and prints what that rule costs where the cap is:

1. ``one node``: every replica a node holds (8), held from start to end, on each version, next to
   static's own fewest replicas. More ready replicas never make a request later under least-loaded
   dispatch, so no policy that keeps to one node does better than the first column: a version whose
   row stays below 99% needs a second node ready at its bursts, asked for a node start-up (plus a
   replica start-up) before them;
2. ``second node``: kgpu's setting with a second node booted from the start and never removed, the
   most any rule that asks for nodes could give the policy (every GPU of two nodes free at every
   burst, no node start-up ever waited for; also with a floor of 4, which x0.5's first burst needs),
   and with a rule that asks for a node as soon as more requests are in the system than the booted
   GPUs hold at the target (an overload signal a live gateway has);
3. ``floor`` and ``memory``: kgpu's setting with higher floors (``minReplicas``), and with longer
   burst memories (``scaleDownStabilizationSeconds``), on the shuffled hour, whose largest burst
   comes after ten minutes of bursts that needed about four replicas: what it needs, and what that
   costs on the full trace.

Deterministic (virtual clock); under a minute on two cores. Writes
bench/results/replay_limits.json.

    .venv/bin/python -m bench.replay_limits [--trace FILE] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from bench.common.machine import machine_facts
from bench.common.results import write_results
from kgpu.autoscaling.context import ScalingContext
from kgpu.autoscaling.policy import REPLICA_POLICIES, ScalingDecision
from kgpu.autoscaling.predictive import Sizing, predictive_decide
from kgpu.sim.azure_trace import DEFAULT_TRACE, TraceError, load_azure_trace
from kgpu.sim.matched_slo import SLO_TARGET_PCT, meets, settings
from kgpu.sim.replay import ReplayLoop, ServiceModel, find_static, replay
from kgpu.sim.trace_versions import VERSIONS, trace_version

RESULTS = Path(__file__).parent / "results"
CHOSEN = "min3-hold600-target16"  # kgpu's setting chosen by bench.replay_matched
STATIC_CAP = 0.75  # the cap: kgpu's GPU-hours on the full trace over static's
FLOORS = (3, 4, 5, 6, 7, 8)
MEMORIES_S = (600.0, 1200.0, 1800.0, 3600.0)


class OverloadSizing(Sizing):
    """kgpu's sizing, with requests in the system beyond what every booted GPU holds at the target
    counted as sustained demand, so they ask for a node on the tick they show."""

    def sustained(self, ctx: ScalingContext, concurrency: float) -> float:
        booted = ctx.current + (ctx.free_gpus or 0)
        if ctx.in_system > booted * ctx.spec.target_per_replica:
            return max(concurrency, ctx.in_system)
        return concurrency


class _OverloadLoop(ReplayLoop):
    def _policies(self, now, active):
        def overload(ctx: ScalingContext, state: object) -> ScalingDecision:
            decision = predictive_decide(ctx, state, OverloadSizing())
            return ScalingDecision(decision.desired, decision.state, speculative=decision.speculative)

        return {**REPLICA_POLICIES, "kgpu": overload}


def summary(result) -> dict:
    return {
        "slo_attainment_pct": round(result.slo_attainment_pct, 3),
        "failed_requests": result.failed_requests,
        "missed": len(result.missed_arrivals_s),
        "gpu_hours": round(result.gpu_hours, 3),
        "node_hours": round(result.node_hours, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_limits.json")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    args = parser.parse_args()
    console = Console(width=120)
    try:
        trace = load_azure_trace(args.trace)
    except TraceError as exc:
        console.print(f"error: {exc}", markup=False)
        return 1
    started = time.perf_counter()
    model = ServiceModel()
    one_node = model.gpus_per_node
    spec = settings("kgpu", model)[CHOSEN]
    versions = {name: trace_version(trace, name) for name in VERSIONS}

    def say(text: str) -> None:
        console.print(f"  [{time.perf_counter() - started:5.0f} s] {text}", markup=False)

    # 1. one node's replicas held throughout, and static's own fewest
    one: dict[str, dict] = {}
    for name, requests in versions.items():
        held = summary(replay(requests, "static", model, static_replicas=one_node))
        fewest = find_static(requests, model)
        one[name] = {"one_node": held, "static_fewest": {"replicas": fewest.replicas, **summary(fewest)}}
        say(f"1. {name}: {one_node} held {held['slo_attainment_pct']:.2f}%, static needs {fewest.replicas}")
    static_full = one["full"]["static_fewest"]
    cap = STATIC_CAP * static_full["gpu_hours"]

    # 2. a second node booted throughout (with kgpu's floor, and with a floor of 4); a node asked on overload
    two_nodes = replace(model, initial_nodes=2, min_nodes=2)
    floor4 = spec.model_copy(update={"min_replicas": 4})
    rules = {
        "booted_throughout": lambda requests: replay(requests, "kgpu", two_nodes, spec=spec),
        "booted_throughout_min4": lambda requests: replay(requests, "kgpu", two_nodes, spec=floor4),
        "asked_on_overload": lambda requests: _OverloadLoop(requests, "kgpu", model, spec, None, 10.0).run(),
    }
    second: dict[str, dict] = {}
    for name, requests in versions.items():
        second[name] = {rule: summary(run(requests)) for rule, run in rules.items()}
        say(
            f"2. {name}: "
            + ", ".join(
                f"{rule} {r['slo_attainment_pct']:.2f}% {r['gpu_hours']:.2f} GPU-h"
                for rule, r in second[name].items()
            )
        )

    # 3. floors and memories on the shuffled hour, and their cost on the full trace
    def on_shuffled_and_full(field: str, values) -> dict:
        rows = {}
        for value in values:
            changed = spec.model_copy(update={field: value})
            rows[value] = {
                v: summary(replay(versions[v], "kgpu", model, spec=changed))
                for v in ("hour-shuffled", "full")
            }
            say(
                f"3. {field} {value:g}: hour-shuffled {rows[value]['hour-shuffled']['slo_attainment_pct']:.2f}%, "
                f"full {rows[value]['full']['gpu_hours']:.2f} GPU-h"
            )
        return rows

    floors = on_shuffled_and_full("min_replicas", FLOORS)
    memories = on_shuffled_and_full("scale_down_stabilization_seconds", MEMORIES_S)

    findings = judge(one, second, floors, memories, cap)
    tables = markdown(one, second, floors, memories, cap, findings)
    console.print(tables, markup=False)
    write_results(
        args.out,
        "replay_limits",
        {"trace": args.trace, "setting": CHOSEN, "service_model": repr(model)},
        machine_facts("cpu"),
        full_trace_cap_gpu_hours=round(cap, 3),
        one_node=one,
        second_node=second,
        floors=floors,
        memories=memories,
        findings=findings,
        seconds=round(time.perf_counter() - started, 1),
    )
    console.print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")
    if args.markdown:
        args.markdown.write_text(tables)
        console.print(f"wrote {args.markdown}")
    return 0


def judge(one: dict, second: dict, floors: dict, memories: dict, cap: float) -> dict:
    """The asks each version makes and what meeting them costs on the full trace, against the cap."""
    beyond_one_node = [v for v, row in one.items() if row["one_node"]["slo_attainment_pct"] < SLO_TARGET_PCT]
    floor_needed = next((f for f, row in floors.items() if meets(row["hour-shuffled"])), None)
    out: dict = {"versions_beyond_one_node": beyond_one_node}
    for rule in second["full"]:
        out[f"{rule}_meets"] = {v: meets(row[rule]) for v, row in second.items()}
        out[f"{rule}_full_gpu_hours"] = second["full"][rule]["gpu_hours"]
    return {
        **out,
        "hour_shuffled_floor_needed": floor_needed,
        "that_floor_full_gpu_hours": floors[floor_needed]["full"]["gpu_hours"] if floor_needed else None,
        "hour_shuffled_memory_needed_s": next(
            (m for m, row in memories.items() if meets(row["hour-shuffled"])), None
        ),
        "full_trace_cap_gpu_hours": round(cap, 3),
    }


def markdown(one: dict, second: dict, floors: dict, memories: dict, cap: float, findings: dict) -> str:
    def pct(r: dict) -> str:
        return f"{r['slo_attainment_pct']:.2f}%" + (
            "" if r["failed_requests"] == 0 else f" ({r['failed_requests']} failed)"
        )

    lines = [
        f"Full-trace cap: {cap:.2f} GPU-hours ({STATIC_CAP}x static's {one['full']['static_fewest']['gpu_hours']:.2f}).",
        "",
        "1. One node's 8 replicas held throughout, and static's fewest replicas at >= 99%",
        "",
        "| version | 8 held: SLO | missed | static's fewest | its SLO | its GPU-hours |",
        "|---|---|---|---|---|---|",
    ]
    for v, row in one.items():
        held, fewest = row["one_node"], row["static_fewest"]
        lines.append(
            f"| {v} | {pct(held)} | {held['missed']} | {fewest['replicas']} | {pct(fewest)} | {fewest['gpu_hours']:.2f} |"
        )
    lines += [
        "",
        f"2. kgpu's setting ({CHOSEN}): a second node booted throughout (with its floor of 3, and with 4), "
        "a node asked on overload",
        "",
        "| version | booted: SLO | GPU-hours | booted, min 4: SLO | GPU-hours | on overload: SLO | GPU-hours |",
        "|---|---|---|---|---|---|---|",
    ]
    for v, row in second.items():
        cells = " | ".join(f"{pct(r)} | {r['gpu_hours']:.2f}" for r in row.values())
        lines.append(f"| {v} | {cells} |")
    lines += [
        "",
        f"3. kgpu's setting with a higher floor or a longer memory: the shuffled hour's SLO, the full trace's "
        f"GPU-hours (cap {cap:.2f})",
    ]
    for knob, rows in (("minReplicas", floors), ("scaleDownStabilizationSeconds", memories)):
        lines += [
            "",
            f"| {knob} | hour-shuffled SLO | missed | full SLO | full GPU-hours |",
            "|---|---|---|---|---|",
        ]
        for value, row in rows.items():
            s, f = row["hour-shuffled"], row["full"]
            lines.append(f"| {value:g} | {pct(s)} | {s['missed']} | {pct(f)} | {f['gpu_hours']:.2f} |")
    lines += ["", "| finding | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in findings.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
