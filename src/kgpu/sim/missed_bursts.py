"""Which bursts of a replay missed their SLO, and why: the breakdown behind an attainment figure.

An attainment below target says little about what to change. Cut the trace into bursts (as
`kgpu.sim.trace_versions.bursts` does) and, for each burst with misses, count them by cause
(`kgpu.sim.replay.MISS_CAUSES`: queueing on the replicas that served already, a replica's cold
start, a node's) and set them next to the replicas that served when the burst began and the most
that served in the minutes before it: a burst that meets fewer ready replicas than served shortly
before found capacity given back too early.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence

from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.replay import MISS_CAUSES, ReplayResult
from kgpu.sim.trace_versions import bursts

LOOK_BACK_S = 600.0


def ready_at(timeline: Sequence[dict], t: float) -> int:
    """Ready replicas in the last frame at or before ``t`` (0 before the first)."""
    times = [frame["t"] for frame in timeline]
    i = bisect.bisect_right(times, t) - 1
    return int(timeline[i]["ready"]) if i >= 0 else 0


def missed_bursts(
    requests: Sequence[TraceRequest],
    result: ReplayResult,
    min_missed: int = 1,
    look_back_s: float = LOOK_BACK_S,
) -> list[dict]:
    """Each burst of ``requests`` with at least ``min_missed`` misses in ``result`` (replayed with a
    timeline), oldest first: when it began, its requests, its misses by cause, the replicas ready
    when it began and the most ready in the ``look_back_s`` before."""
    missed = sorted(zip(result.missed_arrivals_s, result.missed_causes, strict=True))
    arrivals = [t for t, _ in missed]
    times = [frame["t"] for frame in result.timeline]
    out = []
    for burst in bursts(sorted(requests, key=lambda r: r.arrival_s)):
        start, end = burst[0].arrival_s, burst[-1].arrival_s
        lo, hi = bisect.bisect_left(arrivals, start), bisect.bisect_right(arrivals, end)
        if hi - lo < min_missed:
            continue
        causes = Counter(cause for _, cause in missed[lo:hi])
        # frames are in time order: the look-back window by bisection, not a pass over the timeline
        first, last = bisect.bisect_left(times, start - look_back_s), bisect.bisect_right(times, start)
        before = [int(frame["ready"]) for frame in result.timeline[first:last]]
        onset = ready_at(result.timeline, start)
        out.append(
            {
                "start_s": round(start, 1),
                "requests": len(burst),
                "missed": hi - lo,
                "causes": {name: causes.get(name, 0) for name in MISS_CAUSES},
                "ready_at_start": onset,
                "most_ready_before": max(before, default=onset),
            }
        )
    return out
