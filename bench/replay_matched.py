"""Autoscalers at the same SLO, judged on trace versions they were not tuned on.

1. On the full Azure code trace, sweep each policy's knobs (`kgpu.sim.matched_slo.settings`) and keep
   its cheapest setting reaching >= 99% SLO with no failed request (`cheapest_meeting`);
2. replay that one setting, unchanged, on every version of the trace (`kgpu.sim.trace_versions`),
   and static with its replica count searched again on each;
3. print one table per version (SLO, failed, GPU-hours, node-hours) and check the targets: kgpu >= 99%
   and 0 failed on every version; kgpu's GPU-hours <= 0.85x the cheaper of KPA's and HPA's on the full
   trace and on the mean over the versions; <= 0.75x static's on the full trace. The held-out versions
   (`HELD_OUT`) get their tables too, and stay out of the targets: nothing was chosen on them;
4. say where kgpu's chosen setting misses: per version, the bursts with at least ``MIN_MISSED`` misses,
   by cause, with the replicas ready when each began (`kgpu.sim.missed_bursts`);
5. replay every kgpu setting of the sweep on every version: which settings, if any, hold >= 99% on
   all of them, and at what GPU-hours (the cost of robustness for this policy).

Runs one replay at a time (the machine is shared) and caches each result in ``--cache``, keyed by the
trace, the version, the setting and a digest of the replay's and the policies' sources, so a rerun
after a change replays only what the change can affect. Writes bench/results/replay_matched.json.

    .venv/bin/python -m bench.replay_matched [--trace FILE] [--versions NAME ...] [--cache FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

import kgpu.autoscaling
import kgpu.gateway.deadline_queue
import kgpu.sim.replay
from bench.common.machine import machine_facts
from bench.common.results import write_results
from kgpu.sim.azure_trace import DEFAULT_TRACE, TraceError, load_azure_trace
from kgpu.sim.matched_slo import cheapest_meeting, mean, meets, settings
from kgpu.sim.missed_bursts import missed_bursts
from kgpu.sim.replay import MISS_CAUSES, ServiceModel, default_spec, find_static, replay
from kgpu.sim.trace_versions import ALL_VERSIONS, HELD_OUT, VERSIONS, trace_version

RESULTS = Path(__file__).parent / "results"
SWEPT = ("kpa", "hpa", "kgpu")
KEPT = (
    "slo_attainment_pct",
    "failed_requests",
    "gpu_hours",
    "node_hours",
    "max_replicas",
    "replicas",
    "stopped_before_ready",
)
MIN_MISSED = 10  # a burst with fewer misses is not listed
FRAME_S = 2.0  # timeline step of the replays the burst breakdown reads


def code_digest() -> str:
    """What the replayed numbers depend on: the replay, the policies and the gateway queue."""
    digest = hashlib.sha256()
    paths = [Path(kgpu.sim.replay.__file__), Path(kgpu.gateway.deadline_queue.__file__)]
    paths += sorted(Path(kgpu.autoscaling.__file__).parent.glob("*.py"))
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


class Cache:
    def __init__(self, path: Path, prefix: str) -> None:
        self.path, self.prefix = path, prefix
        self.data: dict = json.loads(path.read_text()) if path.is_file() else {}

    def get(self, key: str, compute) -> dict:
        full = f"{self.prefix}|{key}"
        if full not in self.data:
            self.data[full] = compute()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(self.data))
        return self.data[full]


def summary(result) -> dict:
    data = result.to_dict()
    out = {k: data[k] for k in KEPT if k in data}
    causes = Counter(result.missed_causes)
    out["missed_by_cause"] = {name: causes.get(name, 0) for name in MISS_CAUSES}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--versions", nargs="+", default=list(ALL_VERSIONS), choices=list(ALL_VERSIONS))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/kgpu-replay-matched-cache.json"))
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_matched.json")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables as Markdown here")
    args = parser.parse_args()
    console = Console(width=120)
    try:
        trace = load_azure_trace(args.trace)
    except TraceError as exc:
        console.print(f"error: {exc}", markup=False)
        return 1
    model = ServiceModel()
    cache = Cache(args.cache, f"{args.trace.name}|{code_digest()}")
    started = time.perf_counter()

    def run(version: str, policy: str, name: str, spec) -> dict:
        def compute() -> dict:
            t0 = time.perf_counter()
            requests = trace_version(trace, version)
            if policy == "static":
                result = summary(find_static(requests, model))
            else:
                result = summary(replay(requests, policy, model, spec=spec))
            console.print(
                f"  {version:>13} {policy:>6} {name:<28} {result['slo_attainment_pct']:6.2f}% "
                f"failed {result['failed_requests']:>3} {result['gpu_hours']:6.2f} GPU-h "
                f"({time.perf_counter() - t0:.1f} s)",
                markup=False,
            )
            return result

        return cache.get(f"{version}|{policy}|{name}", compute)

    # 1. the sweep on the full trace
    sweeps: dict[str, dict[str, dict]] = {}
    chosen: dict[str, str] = {}
    for policy in SWEPT:
        console.print(f"sweeping {policy} on the full trace", markup=False)
        grid = settings(policy, model)
        sweeps[policy] = {name: run("full", policy, name, spec) for name, spec in grid.items()}
        chosen[policy], ok = cheapest_meeting(sweeps[policy])
        console.print(f"  -> {policy}: {chosen[policy]}{'' if ok else ' (none meets the SLO target)'}")

    # 2. the chosen settings on every version
    per_version: dict[str, dict[str, dict]] = {}
    for version in args.versions:
        console.print(f"version {version}", markup=False)
        row = {"static": run(version, "static", "searched", None)}
        for policy in SWEPT:
            row[policy] = run(version, policy, chosen[policy], settings(policy, model)[chosen[policy]])
        per_version[version] = row

    # 3. where kgpu's chosen setting misses
    kgpu_spec = settings("kgpu", model)[chosen["kgpu"]]

    def bursts_of(version: str) -> list[dict]:
        def compute() -> dict:
            requests = trace_version(trace, version)
            result = replay(requests, "kgpu", model, spec=kgpu_spec, timeline_every_s=FRAME_S)
            return {"bursts": missed_bursts(requests, result, MIN_MISSED)}

        return cache.get(f"{version}|kgpu-bursts|{chosen['kgpu']}", compute)["bursts"]

    kgpu_bursts = {version: bursts_of(version) for version in args.versions}

    # 4. every kgpu setting on every version
    console.print("every kgpu setting on every version", markup=False)
    grid = settings("kgpu", model)
    everywhere = {
        name: {version: run(version, "kgpu", name, spec) for version in args.versions}
        for name, spec in grid.items()
    }
    frontier = robustness(everywhere)

    # 5. tables and targets
    for version, row in per_version.items():
        table = Table(title=f"{version}: static x{row['static'].get('replicas')}")
        for header in ("policy", "setting", "SLO met", "failed", "GPU-hours", "node-hours"):
            table.add_column(header, justify="left" if header in ("policy", "setting") else "right")
        for policy, r in row.items():
            table.add_row(
                policy,
                chosen.get(policy, f"x{r.get('replicas')}"),
                f"{r['slo_attainment_pct']:.2f}%",
                str(r["failed_requests"]),
                f"{r['gpu_hours']:.2f}",
                f"{r['node_hours']:.2f}",
            )
        console.print(table)
    for version, found in kgpu_bursts.items():
        for burst in found:
            console.print(f"  kgpu misses on {version}: {burst}", markup=False)
    for name, row in list(frontier.items())[:5]:
        console.print(f"  kgpu {name}: {row}", markup=False)
    targets = judge({v: row for v, row in per_version.items() if v in VERSIONS})
    for name, value in targets.items():
        console.print(f"target {name}: {value}", markup=False)
    write_results(
        args.out,
        "replay_matched",
        {
            "trace": args.trace,
            "service_model": json.dumps(model.__dict__),
            "versions": ",".join(args.versions),
        },
        machine_facts("cpu"),
        defaults={p: default_spec(p, model).model_dump() for p in SWEPT},
        chosen=chosen,
        settings={p: {n: s.model_dump() for n, s in settings(p, model).items()} for p in SWEPT},
        sweeps=sweeps,
        versions=per_version,
        held_out=[v for v in args.versions if v in HELD_OUT],
        kgpu_missed_bursts=kgpu_bursts,
        kgpu_every_setting=everywhere,
        kgpu_robustness=frontier,
        targets=targets,
        seconds=round(time.perf_counter() - started, 1),
    )
    console.print(f"wrote {args.out} ({time.perf_counter() - started:.0f} s)")
    if args.markdown:
        args.markdown.write_text(markdown(chosen, per_version, targets, kgpu_bursts, frontier))
        console.print(f"wrote {args.markdown}")
    return 0


def robustness(everywhere: dict[str, dict[str, dict]]) -> dict[str, dict]:
    """Per kgpu setting: on how many judged and held-out versions it meets the target, its worst SLO,
    its GPU-hours on the full trace and on the mean over the judged versions; most versions met
    first, then fewest GPU-hours on the full trace."""
    rows = {}
    for name, results in everywhere.items():
        judged = [results[v] for v in VERSIONS if v in results]
        rows[name] = {
            "judged_met": sum(meets(r) for r in judged),
            "judged": len(judged),
            "held_out_met": sum(meets(results[v]) for v in HELD_OUT if v in results),
            "held_out": sum(1 for v in HELD_OUT if v in results),
            "worst_slo_pct": round(min(r["slo_attainment_pct"] for r in results.values()), 2),
            "full_gpu_hours": round(results["full"]["gpu_hours"], 3) if "full" in results else None,
            "mean_gpu_hours": round(mean(r["gpu_hours"] for r in judged), 3),
        }
    order = sorted(rows, key=lambda n: (-rows[n]["judged_met"], rows[n]["full_gpu_hours"] or 0.0, n))
    return {name: rows[name] for name in order}


def markdown(
    chosen: dict[str, str],
    per_version: dict[str, dict[str, dict]],
    targets: dict,
    kgpu_bursts: dict[str, list[dict]],
    frontier: dict[str, dict],
) -> str:
    """One table per version, the targets, where kgpu misses, and every kgpu setting on every version."""
    lines = []
    for version, row in per_version.items():
        held_out = " (held out)" if version in HELD_OUT else ""
        lines += [
            f"**{version}**{held_out}",
            "",
            "| policy | setting | SLO met | failed | GPU-hours | node-hours |",
        ]
        lines.append("|---|---|---|---|---|---|")
        for policy, r in row.items():
            setting = chosen.get(policy, f"{r.get('replicas')} replicas")
            lines.append(
                f"| {policy} | {setting} | {r['slo_attainment_pct']:.2f}% | {r['failed_requests']} | "
                f"{r['gpu_hours']:.2f} | {r['node_hours']:.2f} |"
            )
        lines.append("")
    lines.append("| target | met | figures |")
    lines.append("|---|---|---|")
    for name, value in targets.items():
        figures = ", ".join(f"{k} {v}" for k, v in value.items() if k != "met")
        lines.append(f"| {name} | {'yes' if value['met'] else 'NO'} | {figures} |")
    lines += ["", f"kgpu ({chosen['kgpu']}): bursts with at least {MIN_MISSED} misses", ""]
    header = ["version", "burst from", "requests", "missed", *MISS_CAUSES, "ready at its start"]
    lines.append("| " + " | ".join([*header, "most ready in the 10 min before"]) + " |")
    lines.append("|---" * (6 + len(MISS_CAUSES)) + "|")
    for version, found in kgpu_bursts.items():
        for b in found:
            causes = " | ".join(str(b["causes"][name]) for name in MISS_CAUSES)
            lines.append(
                f"| {version} | {b['start_s']:.0f} s | {b['requests']} | {b['missed']} | {causes} | "
                f"{b['ready_at_start']} | {b['most_ready_before']} |"
            )
    lines += ["", "Every kgpu setting of the sweep on every version", ""]
    lines.append(
        "| setting | judged versions met | held-out met | worst SLO | GPU-hours full | mean (judged) |"
    )
    lines.append("|---|---|---|---|---|---|")
    for name, r in frontier.items():
        lines.append(
            f"| {name} | {r['judged_met']}/{r['judged']} | {r['held_out_met']}/{r['held_out']} | "
            f"{r['worst_slo_pct']:.2f}% | {r['full_gpu_hours']:.2f} | {r['mean_gpu_hours']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def judge(per_version: dict[str, dict[str, dict]]) -> dict:
    """The issue's targets, each with the numbers behind it."""
    out: dict = {}
    kgpu_ok = {v: meets(row["kgpu"]) for v, row in per_version.items()}
    out["kgpu_slo99_no_failed_every_version"] = {"met": all(kgpu_ok.values()), "per_version": kgpu_ok}
    if "full" in per_version:
        full = per_version["full"]
        cheaper = min(full["kpa"]["gpu_hours"], full["hpa"]["gpu_hours"])
        ratio = full["kgpu"]["gpu_hours"] / cheaper
        out["kgpu_le_0.85x_cheaper_of_kpa_hpa_full"] = {"met": ratio <= 0.85, "ratio": round(ratio, 3)}
        ratio = full["kgpu"]["gpu_hours"] / full["static"]["gpu_hours"]
        out["kgpu_le_0.75x_static_full"] = {"met": ratio <= 0.75, "ratio": round(ratio, 3)}
    means = {p: mean(row[p]["gpu_hours"] for row in per_version.values()) for p in ("kgpu", "kpa", "hpa")}
    ratio = means["kgpu"] / min(means["kpa"], means["hpa"])
    out["kgpu_le_0.85x_cheaper_of_kpa_hpa_mean"] = {
        "met": ratio <= 0.85,
        "ratio": round(ratio, 3),
        "mean_gpu_hours": {p: round(v, 3) for p, v in means.items()},
    }
    return out


if __name__ == "__main__":
    sys.exit(main())
