"""The burst breakdown of a replay's misses: which bursts, how many, why, and the replicas they met."""

from __future__ import annotations

from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.missed_bursts import missed_bursts
from kgpu.sim.replay import MISS_CAUSES, replay


def test_the_burst_that_overloads_one_replica_is_the_one_listed():
    # 4 requests at 0 s fit one replica; 40 at 100 s do not: waves of 16 at 500 units/s finish at
    # 2 s and 4 s (SLO 4 s), the last 8 at 5 s miss, queued on the replica that served already.
    trace = [TraceRequest(0.0, 1000, 0)] * 4 + [TraceRequest(100.0, 1000, 0)] * 40
    result = replay(trace, "static", static_replicas=1, timeline_every_s=1.0)
    (burst,) = missed_bursts(trace, result)
    assert burst["start_s"] == 100.0 and burst["requests"] == 40 and burst["missed"] == 8
    assert burst["causes"] == {name: 8 if name == "queueing" else 0 for name in MISS_CAUSES}
    assert burst["ready_at_start"] == burst["most_ready_before"] == 1
    assert missed_bursts(trace, result, min_missed=9) == []


def test_most_ready_before_is_the_largest_ready_count_in_the_look_back_window():
    # Autoscaled: the ready count moves between bursts; the window is found by bisection over the
    # timeline and must give what scanning every frame gives.
    trace = [TraceRequest(float(t), 1000, 0) for t in range(0, 300, 10) for _ in range(30)]
    trace += [TraceRequest(float(t), 1000, 0) for t in (400, 460) for _ in range(300)]
    result = replay(trace, "kgpu", timeline_every_s=1.0)
    listed = missed_bursts(trace, result, look_back_s=120.0)
    assert len(listed) == 2
    for burst in listed:
        start = burst["start_s"]
        window = [int(f["ready"]) for f in result.timeline if start - 120.0 <= f["t"] <= start]
        assert burst["most_ready_before"] == max(window, default=burst["ready_at_start"])
