"""Packing on every workload variant of the openb trace: random, best-fit, FGD and kgpu, one run.

    .venv/bin/python -m bench.packing_variants                      # every variant + default, seeds 42-51
    .venv/bin/python -m bench.packing_variants --seeds 42-43 --policies fgd,kgpu --variants gpuspec33
    .venv/bin/python -m bench.packing_variants --seeds 100-109 --policies fgd,kgpu \
        --variants multigpu35,multigpu40+gpuspec20 --json bench/results/packing_variants_heldout.json

Variants: kgpu.sim.variants (one dimension at a time: CPU-only pods' CPU, GPU-sharing pods,
GPU-model pins, multi-GPU pods; its docstring gives method and levels; any other level, or two
dimensions joined by '+', for checks on mixes nothing was tuned on). Each run is the FGD paper's
packing benchmark (kgpu.sim.packing). Prints, per trace, the mean over seeds of the allocation at
100% and 130% arrived for every policy and kgpu's margin over FGD; writes
bench/results/packing_variants.json (every run's allocation at 100% and 130%, and the table).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

from bench.common.results import write_results
from bench.packing import parse_seeds
from kgpu.scheduling.requests import PodRequest
from kgpu.sim.packing import run_packing
from kgpu.sim.traces import DEFAULT_NODES, DEFAULT_PODS, TraceError, load_nodes, load_pods
from kgpu.sim.variants import HELD_OUT, build_variant, mix, variant_names

RESULTS = Path(__file__).parent / "results"
DEFAULT = "default"
POINTS = ("100", "130")


@lru_cache(maxsize=4)
def _trace(nodes: str, pods: str, name: str) -> tuple[list, list[PodRequest]]:
    node_specs, trace = load_nodes(nodes), load_pods(pods)
    return node_specs, trace if name == DEFAULT else build_variant(name, trace, node_specs).pods


def _one(job: tuple[str, str, str, str, int]) -> dict:
    nodes, pods, name, policy, seed = job
    node_specs, trace = _trace(nodes, pods, name)
    r = run_packing(node_specs, trace, policy, seed)
    return {
        "trace": name,
        "policy": policy,
        "seed": seed,
        "alloc": {p: r["allocation_pct_at"][p] for p in POINTS},
        "seconds": r["seconds"],
    }


def table(runs: list[dict], traces: list[str], policies: list[str]) -> dict[str, dict]:
    """trace -> {policy -> {point -> mean}, margin -> {point -> kgpu - fgd}}."""
    out: dict[str, dict] = {}
    for name in traces:
        row: dict = {}
        for policy in policies:
            mine = [r for r in runs if r["trace"] == name and r["policy"] == policy]
            row[policy] = {p: statistics.fmean(r["alloc"][p] for r in mine) for p in POINTS}
        if "kgpu" in row and "fgd" in row:
            row["margin"] = {p: row["kgpu"][p] - row["fgd"][p] for p in POINTS}
            pairs = [
                (k["alloc"]["100"], f["alloc"]["100"])
                for k in runs
                if k["trace"] == name and k["policy"] == "kgpu"
                for f in runs
                if f["trace"] == name and f["policy"] == "fgd" and f["seed"] == k["seed"]
            ]
            row["seeds_kgpu_below_fgd_100"] = sum(1 for k, f in pairs if k < f)
        out[name] = row
    return out


def print_table(rows: dict[str, dict], policies: list[str]) -> None:
    head = " | ".join(f"{p} @100 | {p} @130" for p in policies)
    print(f"\n| trace | {head} | kgpu - fgd @100 | kgpu - fgd @130 | seeds kgpu < fgd @100 |")
    print("|---" * (2 * len(policies) + 4) + "|")
    for name, row in rows.items():
        cells = " | ".join(f"{row[p]['100']:.2f} | {row[p]['130']:.2f}" for p in policies)
        label = f"{name} (held out)" if name in HELD_OUT else name
        margin = row.get("margin")
        tail = (
            f"{margin['100']:+.2f} | {margin['130']:+.2f} | {row['seeds_kgpu_below_fgd_100']}"
            if margin
            else "- | - | -"
        )
        print(f"| {label} | {cells} | {tail} |")
    margins = [row["margin"]["100"] for name, row in rows.items() if name != DEFAULT and "margin" in row]
    if margins:
        held = [rows[n]["margin"]["100"] for n in rows if n in HELD_OUT and "margin" in rows[n]]
        print(
            f"\nkgpu - fgd @100 over {len(margins)} variants: mean {statistics.fmean(margins):+.2f}, "
            f"min {min(margins):+.2f}; variants with kgpu < fgd: {sum(m < 0 for m in margins)}"
            + (f"; held-out mean {statistics.fmean(held):+.2f}, min {min(held):+.2f}" if held else "")
        )


def combine(specs: list[str], out: Path) -> int:
    """The table of runs saved by earlier invocations, each ``FILE`` or ``FILE:policy,policy`` (only
    those policies' runs); a (trace, policy, seed) may come from one source only."""
    sources = [Path(spec.split(":")[0]) for spec in specs]
    wanted = [set(spec.split(":")[1].split(",")) if ":" in spec else None for spec in specs]
    documents = [json.loads(p.read_text()) for p in sources]
    runs: list[dict] = []
    seen: set[tuple] = set()
    for path, doc, only in zip(sources, documents, wanted, strict=True):
        for r in doc["runs"]:
            if only is not None and r["policy"] not in only:
                continue
            key = (r["trace"], r["policy"], r["seed"])
            if key in seen:
                print(f"error: {path}: {key} is also in an earlier file", file=sys.stderr)
                return 1
            seen.add(key)
            runs.append(r)
    traces = list(dict.fromkeys(r["trace"] for r in runs))
    policies = [p for p in ("random", "best-fit", "fgd", "kgpu") if any(r["policy"] == p for r in runs)]
    rows = table(runs, traces, policies)
    print_table(rows, policies)
    write_results(
        out,
        "packing_variants",
        {"from_json": " ".join(specs)},
        documents[0]["machine"],
        sources=[
            {"source": spec, "created": d["created"], "command": d["command"], "seconds": d["seconds"]}
            for spec, d in zip(specs, documents, strict=True)
        ],
        held_out=list(HELD_OUT),
        mixes=documents[0]["mixes"],
        table=rows,
        runs=runs,
    )
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--policies", default="random,best-fit,fgd,kgpu")
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--variants", default=",".join([DEFAULT, *variant_names()]), help="names, 'default' too")
    ap.add_argument("--trace", default=str(DEFAULT_PODS))
    ap.add_argument("--nodes", default=str(DEFAULT_NODES))
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=str(RESULTS / "packing_variants.json"))
    ap.add_argument(
        "--from-json",
        nargs="+",
        metavar="FILE[:POLICIES]",
        help="place nothing: the table of the runs saved in these result files, optionally only some "
        "policies' (baselines from one run and kgpu from a later one; the JSON names every source)",
    )
    args = ap.parse_args()
    if args.from_json:
        return combine(args.from_json, Path(args.json))

    policies, seeds, traces = args.policies.split(","), parse_seeds(args.seeds), args.variants.split(",")
    try:
        node_specs, pods = load_nodes(args.nodes), load_pods(args.trace)
        mixes = {name: mix(_trace(args.nodes, args.trace, name)[1]) for name in traces}
    except (TraceError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    jobs = [(args.nodes, args.trace, name, p, s) for name in traces for p in policies for s in seeds]
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        runs = list(pool.map(_one, jobs, chunksize=len(seeds)))
    elapsed = time.perf_counter() - started
    print(
        f"{len(jobs)} runs in {elapsed:.0f} s on {args.workers} workers ({len(node_specs)} nodes, {len(pods)} trace pods)"
    )
    rows = table(runs, traces, policies)
    print_table(rows, policies)
    write_results(
        Path(args.json),
        "packing_variants",
        {"policies": args.policies, "seeds": args.seeds, "variants": args.variants},
        {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        held_out=list(HELD_OUT),
        mixes=mixes,
        table=rows,
        runs=runs,
        seconds=round(elapsed, 1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
