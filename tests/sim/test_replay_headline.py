"""The autoscaling headline on a burst pattern small enough to work out by hand.

Two bursts of 64 requests (1,000 work units each: 1 s alone, SLO 2 + 2 x 1 = 4 s), at 0 s and at
300 s. kgpu keeps a floor of 5 replicas: 64 requests spread 13/13/13/13/12 over them, each at
1,000 x 8/13 units/s, so every request finishes 13/8 = 1.625 s after its burst; the floor holds
through the silence, so the second burst is served the same way. GPU-hours: 5 replicas from 0 s to
the last completion at 301.625 s. Knative's autoscaler, from one replica, gives every replica back
in the silence (30 s of scale-to-zero grace), so the second burst waits for a 20 s cold start,
longer than any request's SLO: it meets at most the 64 requests of the first burst.
"""

from __future__ import annotations

import pytest

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.replay import replay

BURSTS = [TraceRequest(start, 1000, 0) for start in (0.0, 300.0) for _ in range(64)]
KGPU = AutoscalingSpec(
    policy="kgpu",
    min_replicas=5,
    max_replicas=32,
    target=16.0,
    target_utilization=1.0,
    scale_down_stabilization_seconds=300.0,
    scale_to_zero_idle_seconds=600.0,
)


def test_kgpu_serves_both_bursts_on_its_floor_for_the_hours_worked_out_by_hand():
    result = replay(BURSTS, "kgpu", spec=KGPU)
    assert result.slo_attainment_pct == 100.0 and result.failed_requests == 0
    assert result.max_latency_s == pytest.approx(13 / 8)
    assert result.duration_s == pytest.approx(300 + 13 / 8)
    assert result.gpu_hours == pytest.approx(5 * (300 + 13 / 8) / 3600)


def test_knative_misses_the_burst_after_the_silence():
    result = replay(BURSTS, "kpa")
    assert result.failed_requests == 0
    assert result.slo_met <= 64  # the second burst waits >= 20 s for a replica: all 64 miss
    assert min(result.missed_arrivals_s) == 300.0 or result.slo_met < 64
    # Never more than the 32 GPUs of the pool, for at most the 320 s the replay lasts.
    assert 0 < result.gpu_hours <= 32 * 320 / 3600
