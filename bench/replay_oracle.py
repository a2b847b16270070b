"""A clairvoyant replica schedule for the trace: how few GPU-hours reach 99% SLO when arrivals are known.

No autoscaler can do this (it knows every arrival in advance); it bounds what any policy, kgpu's
included, could reach. Method:

1. replay fixed replica counts 1..N and count SLO misses by arrival time in buckets of
   ``--bucket`` seconds (as bench/replay_bursts.py does);
2. choose one replica count per bucket (0 where nothing arrives) minimising the total
   replica-seconds subject to at most ``budget`` misses in all (a knapsack by dynamic programming;
   the budget starts at 1% of the requests);
3. replay that schedule with each bucket's replicas started a replica start-up ahead, so they are
   ready when the bucket begins (their start-up counts in GPU-hours); buckets interact (a backlog
   carries over), so while the replay misses the SLO, the bucket whose misses exceed the
   fixed-count prediction most gets one more replica.

Then the same schedule held, in every bucket, at the next higher count still to come: what a
policy that knew every burst's size but not when it starts would have to keep ready.

Prints the schedules' SLO and GPU-hours next to static's for each gateway model; writes
bench/results/replay_oracle.json.

    .venv/bin/python -m bench.replay_oracle [--bucket 30] [--max-replicas 8]
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

from kgpu.sim.azure_trace import DEFAULT_TRACE, TraceRequest, load_azure_trace
from kgpu.sim.replay import ReplayLoop, ReplayResult, ServiceModel, find_static, replay

RESULTS = Path(__file__).parent / "results"
MODELS = {"no-limit": ServiceModel(), "cc8": ServiceModel(container_concurrency=8)}


class _Scheduled(ReplayLoop):
    """kgpu's replay loop (2 s ticks) with the replica count read from a schedule, looking ahead."""

    def __init__(self, requests, model, schedule: list[int], bucket_s: float) -> None:
        self.schedule, self.bucket_s = schedule, bucket_s
        super().__init__(requests, "kgpu", model, None, None, 10.0, initial_replicas=self._wanted(0.0, model))

    def _at(self, t: float) -> int:
        index = int(t // self.bucket_s)
        return self.schedule[index] if 0 <= index < len(self.schedule) else 0

    def _wanted(self, now: float, model: ServiceModel) -> int:
        # Ready by the start of every bucket up to a start-up (plus a tick) ahead; never none
        # while requests wait.
        ahead = model.replica_startup_s + 2.0
        waiting = now == 0 or bool(getattr(self, "queue", None))
        return max(self._at(now), self._at(now + ahead), 1 if waiting else 0)

    def _tick(self, now: float) -> None:
        self._sample(now)
        self._scale_to(now, self._wanted(now, self.model))

    def _node_scan(self, now: float) -> None:
        # The first node stays (the schedule never needs more): an empty node must not go away
        # before the next bucket's replicas.
        return


def misses_by_bucket(
    trace: list[TraceRequest], model: ServiceModel, counts: range, bucket_s: float
) -> dict[int, Counter[int]]:
    out = {}
    for count in counts:
        result = replay(trace, "static", model, static_replicas=count)
        out[count] = Counter(int(t // bucket_s) for t in result.missed_arrivals_s)
    return out


def choose(
    arrivals: Counter[int], misses: dict[int, Counter[int]], buckets: int, budget: int
) -> list[int] | None:
    """Per bucket, the replica count (0 for an empty bucket) minimising replica-buckets, misses <= budget."""
    inf = math.inf
    best = [0.0] + [inf] * budget  # best[m]: least replica-buckets so far with m misses
    picks: list[list[list[int]]] = [[[] for _ in range(budget + 1)]]
    for b in range(buckets):
        options = [(0, arrivals.get(b, 0))]  # no replica: everything arriving then misses
        options += [(c, misses[c].get(b, 0)) for c in sorted(misses)]
        new = [inf] * (budget + 1)
        back: list[list[int]] = [[] for _ in range(budget + 1)]
        for m, cost in enumerate(best):
            if cost == inf:
                continue
            for count, miss in options:
                if m + miss <= budget and cost + count < new[m + miss]:
                    new[m + miss] = cost + count
                    back[m + miss] = [*picks[-1][m], count]
        best = new
        picks.append(back)
    final = min(range(budget + 1), key=lambda m: best[m])
    return None if best[final] == inf else picks[-1][final]


def oracle(trace: list[TraceRequest], model: ServiceModel, bucket_s: float, max_replicas: int) -> dict:
    arrivals = Counter(int(r.arrival_s // bucket_s) for r in trace)
    buckets = int(trace[-1].arrival_s // bucket_s) + 1
    misses = misses_by_bucket(trace, model, range(1, max_replicas + 1), bucket_s)
    allowed = len(trace) - math.ceil(0.99 * len(trace))
    schedule = choose(arrivals, misses, buckets, allowed)
    if schedule is None:
        return {"budget": None}
    # Repair: where the replay misses more than the bucket's fixed-count replay predicted (a
    # backlog carried over), add a replica to that bucket, and replay again.
    predicted = [0 if c == 0 else misses[c].get(b, 0) for b, c in enumerate(schedule)]
    for _ in range(200):
        result: ReplayResult = _Scheduled(trace, model, schedule, bucket_s).run()
        if result.slo_attainment_pct >= 99.0 and result.failed_requests == 0:
            return {
                "repairs": _,
                "schedule": schedule,
                "slo_attainment_pct": result.slo_attainment_pct,
                "failed_requests": result.failed_requests,
                "gpu_hours": result.gpu_hours,
                "mean_replicas": sum(schedule) / len(schedule),
            }
        actual = Counter(int(t // bucket_s) for t in result.missed_arrivals_s)
        worst = max(range(buckets), key=lambda b: (actual.get(b, 0) - predicted[b], -b))
        schedule[worst] = min(max(misses), schedule[worst] + 1)
        predicted[worst] = misses[schedule[worst]].get(worst, 0)
    return {"budget": None}


def hold_next_rise(schedule: list[int]) -> list[int]:
    """The schedule of a policy that knows each burst's size but not when it starts.

    Nothing says when the count must rise next, so the next higher count is held from now on:
    bucket b gets max(c_b, c_n) where n is the first later bucket with a count above c_b.
    """
    held = list(schedule)
    for b, count in enumerate(schedule):
        higher = next((c for c in schedule[b + 1 :] if c > count), count)
        held[b] = max(count, higher)
    return held


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--bucket", type=float, default=30.0)
    parser.add_argument(
        "--max-replicas", type=int, default=8, help="at most one node: no node start-up to plan for"
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "replay_oracle.json")
    args = parser.parse_args()
    trace = load_azure_trace(args.trace)
    payload = {}
    for name, model in MODELS.items():
        static = find_static(trace, model)
        found = oracle(trace, model, args.bucket, args.max_replicas)
        payload[name] = {"static_replicas": static.replicas, "static_gpu_hours": static.gpu_hours, **found}
        if "schedule" not in found:
            print(f"{name}: no schedule found")
            continue
        print(
            f"{name}: clairvoyant {found['slo_attainment_pct']:.2f}% SLO, {found['failed_requests']} failed, "
            f"{found['gpu_hours']:.2f} GPU-hours = {100 * found['gpu_hours'] / static.gpu_hours:.1f}% of "
            f"static x{static.replicas} ({static.gpu_hours:.2f}); {found['repairs']} repairs"
        )
        held = hold_next_rise(found["schedule"])
        oblivious = _Scheduled(trace, model, held, args.bucket).run()
        payload[name]["time_oblivious"] = {
            "schedule": held,
            "slo_attainment_pct": oblivious.slo_attainment_pct,
            "failed_requests": oblivious.failed_requests,
            "gpu_hours": oblivious.gpu_hours,
        }
        print(
            f"{name}: the same schedule held until its next rise (burst sizes known, not their times): "
            f"{oblivious.slo_attainment_pct:.2f}% SLO, {oblivious.gpu_hours:.2f} GPU-hours = "
            f"{100 * oblivious.gpu_hours / static.gpu_hours:.1f}% of static"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"trace": str(args.trace), "bucket_s": args.bucket, **payload}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
