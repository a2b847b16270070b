"""The trace replay on a fleet of clusters: what the fleet costs, and its SLO through an outage.

The fleet is examples/fleets/onprem-and-cloud.yaml (a cheap on-premises cluster of four H100s, a dear cloud of
8-GPU H100 nodes); the service autoscales with kgpu's policy. On each version of the trace
(`kgpu.sim.trace_versions`, the held-out ones too) it replays:

- ``fill``: the fleet with its placement (cheapest first, overflow to the cloud), no outage;
- ``one-cluster``: the same pools in one cluster, each GPU priced at the catalog's price of its
  model (`catalog_price_per_gpu_hour`), no outage;
- ``dear-only``: everything from the dearest cluster alone, no outage;
- ``fill-outage``: the fleet, its cheapest cluster out for ``--outage-minutes`` from the middle of
  the trace's busiest hour (the whole trace when it is shorter);
- ``fill-outage-early``: the same outage from the start of the busiest ten minutes;
- ``spread-outage``: the outage in the middle of the busiest hour under the ``spread`` placement;
- ``fill-outage-grace-0s``: ``fill-outage`` with the cluster marked unavailable at the first
  missed heartbeat instead of after the fleet's ``failoverAfter`` (what the grace period costs).

Targets: through the outage (``fill-outage``) >= 99% SLO and 0 failed requests; ``fill``'s cost
<= 0.8x ``dear-only``'s. Cost is each replica's GPU-hours at its pool's price; node cost, each
node's hours x its GPUs x the price, is printed beside it. Prints one table per version, writes
bench/results/replay_fleet.json and a chart of each cluster's replicas through the outage on the
full trace (bench/results/replay_fleet.png).

    .venv/bin/python -m bench.replay_fleet [--fleet FILE] [--versions NAME ...] [--markdown FILE]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.common.machine import machine_facts
from bench.common.results import write_results
from kgpu.cli.replay import numbers_table, plot_fleet
from kgpu.gpu.flavors import catalog_price_per_gpu_hour
from kgpu.sim.azure_trace import DEFAULT_TRACE, TraceError, TraceRequest, load_azure_trace
from kgpu.sim.fleet import Fleet, FleetCluster, FleetError, Outage, load_fleet
from kgpu.sim.fleet_replay import FleetReplayResult, replay_fleet
from kgpu.sim.trace_versions import ALL_VERSIONS, trace_version

RESULTS = Path(__file__).parent / "results"
DEFAULT_FLEET = Path(
    "examples/fleets/onprem-and-cloud.yaml"
)  # relative to the project root, like the trace's
HOUR_S = 3600.0
BUSY_WINDOW_S = 600.0
SCENARIOS = (
    "fill",
    "one-cluster",
    "dear-only",
    "fill-outage",
    "fill-outage-early",
    "spread-outage",
    "fill-outage-grace-0s",
)
SLO_TARGET_PCT = 99.0
COST_TARGET = 0.8


def busiest_window(trace: Sequence[TraceRequest], width_s: float) -> tuple[float, float]:
    """The ``width_s`` window (clipped to the trace) holding the most arrivals: (start, end)."""
    arrivals = [r.arrival_s for r in trace]
    best, best_start, j = -1, 0.0, 0
    for i, start in enumerate(arrivals):
        while j < len(arrivals) and arrivals[j] < start + width_s:
            j += 1
        if j - i > best:
            best, best_start = j - i, start
    return best_start, min(best_start + width_s, arrivals[-1])


def outage_starts(trace: Sequence[TraceRequest]) -> dict[str, float]:
    """Where the outages begin: the middle of the busiest hour; the start of the busiest 10 minutes."""
    hour = busiest_window(trace, HOUR_S)
    return {"middle": (hour[0] + hour[1]) / 2, "early": busiest_window(trace, BUSY_WINDOW_S)[0]}


def cheapest(fleet: Fleet) -> FleetCluster:
    return min(fleet.allowed(), key=lambda c: min(p.price for p in c.pools))


def dearest(fleet: Fleet) -> FleetCluster:
    return max(fleet.allowed(), key=lambda c: min(p.price for p in c.pools))


def one_cluster(fleet: Fleet) -> Fleet:
    """Every pool of the fleet in one cluster, each GPU at its model's catalog price."""
    pools = []
    for cluster in fleet.allowed():
        for pool in cluster.pools:
            price = catalog_price_per_gpu_hour(pool.flavor.gpu_model or "")
            flavor = pool.flavor.model_copy(update={"price_per_gpu_hour": price})
            pools.append(pool.model_copy(update={"name": f"{cluster.name}-{pool.name}", "flavor": flavor}))
    merged = FleetCluster(name="one", pools=pools)
    return fleet.model_copy(
        update={
            "clusters": [merged],
            "placement": fleet.placement.model_copy(update={"clusters": ["one"], "cluster_selector": None}),
            "outages": [],
        }
    )


def scenario(fleet: Fleet, name: str, starts: dict[str, float], outage_s: float) -> Fleet:
    base = fleet.model_copy(update={"outages": []})
    if name == "fill":
        return base
    if name == "one-cluster":
        return one_cluster(fleet)
    if name == "dear-only":
        dear = dearest(fleet)
        return base.model_copy(
            update={
                "clusters": [dear],
                "placement": fleet.placement.model_copy(
                    update={"clusters": [dear.name], "cluster_selector": None}
                ),
            }
        )
    start = starts["early" if name == "fill-outage-early" else "middle"]
    outage = Outage(cluster=cheapest(fleet).name, start=start, end=start + outage_s)
    placement = fleet.placement.model_copy(update={"policy": "spread" if name == "spread-outage" else "fill"})
    changes = {"outages": [outage], "placement": placement}
    if name == "fill-outage-grace-0s":
        changes["failover_after"] = 0  # marked unavailable at the first missed heartbeat
    return base.model_copy(update=changes)


def row(result: FleetReplayResult) -> dict:
    r = result.replay
    return {
        "slo_attainment_pct": r.slo_attainment_pct,
        "failed_requests": r.failed_requests,
        "cut_streams": result.cut_streams,
        "retried_requests": result.retried_requests,
        "gpu_hours": r.gpu_hours,
        "cost": result.cost,
        "node_hours": r.node_hours,
        "node_cost": result.node_cost,
        "max_replicas": r.max_replicas,
        "clusters": {c.name: asdict(c) for c in result.clusters},
        "outages": result.outages,
    }


def targets(rows: dict[str, dict]) -> dict[str, bool]:
    out = rows["fill-outage"]
    return {
        "outage_slo99_and_0_failed": out["slo_attainment_pct"] >= SLO_TARGET_PCT
        and out["failed_requests"] == 0,
        "outage_no_cut_stream": out["cut_streams"] == 0,
        "fill_cost_le_0.8x_dear": rows["fill"]["cost"] <= COST_TARGET * rows["dear-only"]["cost"],
    }


def verdicts(met: dict[str, bool]) -> str:
    return ", ".join(f"{name}: {'met' if ok else 'MISSED'}" for name, ok in met.items())


def table(version: str, rows: dict[str, dict], met: dict[str, bool]) -> Table:
    dear = rows["dear-only"]
    out = numbers_table(
        f"{version}: {verdicts(met)}",
        (
            "scenario",
            "SLO met",
            "failed",
            "cut",
            "retried",
            "GPU-h",
            "cost $",
            "x dear",
            "node cost $",
            "x dear",
        ),
    )
    for name, r in rows.items():
        out.add_row(
            name,
            f"{r['slo_attainment_pct']:.2f}%",
            str(r["failed_requests"]),
            str(r["cut_streams"]),
            str(r["retried_requests"]),
            f"{r['gpu_hours']:.2f}",
            f"{r['cost']:.2f}",
            f"{r['cost'] / dear['cost']:.3f}",
            f"{r['node_cost']:.2f}",
            f"{r['node_cost'] / dear['node_cost']:.3f}",
        )
    return out


def markdown(version: str, rows: dict[str, dict], met: dict[str, bool]) -> str:
    dear = rows["dear-only"]
    lines = [
        f"**{version}** ({verdicts(met)})",
        "",
        "| scenario | SLO met | failed | cut streams | retried | GPU-hours | cost $ | x dear | node cost $ | x dear |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['slo_attainment_pct']:.2f}% | {r['failed_requests']} | {r['cut_streams']} | "
            f"{r['retried_requests']} | {r['gpu_hours']:.2f} | {r['cost']:.2f} | {r['cost'] / dear['cost']:.3f} | "
            f"{r['node_cost']:.2f} | {r['node_cost'] / dear['node_cost']:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--fleet", type=Path, default=DEFAULT_FLEET)
    parser.add_argument("--versions", nargs="+", default=list(ALL_VERSIONS), choices=list(ALL_VERSIONS))
    parser.add_argument("--outage-minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_fleet.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "replay_fleet.png")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    args = parser.parse_args()
    if args.outage_minutes <= 0:
        parser.error(f"--outage-minutes must be > 0, got {args.outage_minutes}")
    console = Console(width=160)
    try:
        full = load_azure_trace(args.trace)
        fleet = load_fleet(args.fleet)
    except (TraceError, FleetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    results: dict[str, dict] = {}
    text = []
    for version in args.versions:
        trace = trace_version(full, version)
        starts = outage_starts(trace)
        rows = {}
        for name in SCENARIOS:
            result = replay_fleet(trace, scenario(fleet, name, starts, args.outage_minutes * 60))
            rows[name] = row(result)
            if version == "full" and name == "fill-outage" and args.plot:
                plot_fleet(result, args.plot)
        met = targets(rows)
        results[version] = {"outage_starts_s": starts, "targets": met, "scenarios": rows}
        console.print(table(version, rows, met))
        text.append(markdown(version, rows, met))
    config = {
        "trace": args.trace,
        "fleet": args.fleet,
        "policy": "kgpu",
        "outage_minutes": args.outage_minutes,
    }
    write_results(
        args.out,
        "replay_fleet",
        config,
        machine_facts("cpu"),
        fleet=fleet.model_dump(mode="json"),
        versions=results,
    )
    if args.markdown:
        args.markdown.write_text("\n".join(text))
    console.print(f"wrote {args.out}" + (f" and {args.plot}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
