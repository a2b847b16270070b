"""kgpu's policy with target 16 per replica (utilization 1.0)."""

from __future__ import annotations

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.predictive import PredictiveState, concurrency_slope, predictive_decide
from kgpu.autoscaling.window import Sample

SPEC = AutoscalingSpec(
    target=16, target_utilization=1.0, min_replicas=0, max_replicas=32, scale_down_stabilization_seconds=600
)


def test_live_queue_answers_a_burst_on_the_next_tick():
    d = predictive_decide(SPEC, [], now=2, current_replicas=1, in_system_now=40, replica_startup_s=20)
    assert d.desired == 3  # ceil(40 / 16), without waiting for a window average


def test_trend_is_extrapolated_over_the_start_up_time():
    ramp = [Sample(time=float(t), concurrency=float(t)) for t in range(2, 21, 2)]
    assert concurrency_slope(ramp) == 1.0
    d = predictive_decide(SPEC, ramp, now=20, current_replicas=1, in_system_now=20, replica_startup_s=20)
    assert d.demand_forecast == 40  # 20 now + 1 req/s * 20 s
    assert d.desired == 3  # ceil(40 / 16); without the trend it would be 2


def test_recent_peak_is_held_for_the_stabilization_window():
    spec = SPEC.model_copy(update={"scale_to_zero_idle_seconds": 1000})
    samples = [Sample(time=0, concurrency=64), Sample(time=2, concurrency=0)]
    held = predictive_decide(
        spec, samples, now=100, current_replicas=4, in_system_now=0, replica_startup_s=20
    )
    assert held.desired == 4
    gone = predictive_decide(
        spec, samples, now=700, current_replicas=4, in_system_now=0, replica_startup_s=20, state=held.state
    )
    assert gone.desired == 1  # the peak left the window; not idle for 1000 s yet, so not zero


def test_short_burst_does_not_ask_for_a_node():
    samples = [Sample(time=float(t), concurrency=16.0) for t in range(2, 139, 2)] + [
        Sample(time=140, concurrency=64)
    ]
    kwargs = {
        "now": 140,
        "current_replicas": 2,
        "in_system_now": 64,
        "replica_startup_s": 20,
        "node_startup_s": 120,
    }
    no_gpu = predictive_decide(SPEC, samples, free_gpus=0, **kwargs)
    assert no_gpu.lead_time_s == 140
    assert no_gpu.desired == 2  # 140 s average 16.7 -> 2; the burst is over before a node joins
    plenty = predictive_decide(SPEC, samples, free_gpus=None, **kwargs)
    assert plenty.desired >= 4


def test_scale_to_zero_after_the_idle_time_only():
    spec = SPEC.model_copy(update={"scale_to_zero_idle_seconds": 600})
    state = PredictiveState(last_busy_at=0)
    early = predictive_decide(
        spec, [], now=599, current_replicas=1, in_system_now=0, replica_startup_s=20, state=state
    )
    assert early.desired == 1
    late = predictive_decide(
        spec, [], now=600, current_replicas=1, in_system_now=0, replica_startup_s=20, state=state
    )
    assert late.desired == 0


def test_min_and_max_hold():
    spec = SPEC.model_copy(update={"min_replicas": 2, "max_replicas": 4})
    assert (
        predictive_decide(spec, [], now=0, current_replicas=2, in_system_now=0, replica_startup_s=20).desired
        == 2
    )
    assert (
        predictive_decide(
            spec, [], now=0, current_replicas=2, in_system_now=500, replica_startup_s=20
        ).desired
        == 4
    )
