"""kgpu's policy with target 16 per replica (utilization 1.0)."""

from __future__ import annotations

import pytest

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.context import ScalingContext
from kgpu.autoscaling.predictive import (
    DEFAULT_SIZING,
    MAX_HEADROOM,
    SURPRISE_HORIZON_S,
    SURPRISE_MEMORY_S,
    PredictiveState,
    concurrency_slope,
    measure_surprises,
    observed_headroom,
)
from kgpu.autoscaling.predictive import predictive_decide as decide_in_context
from kgpu.autoscaling.window import Sample
from kgpu.sim.hold_tuning import HoldTuning, TunedSizing, deadline_need, held_level, remember, work_need


def predictive_decide(
    spec,
    samples,
    now,
    current_replicas,
    in_system_now,
    replica_startup_s,
    node_startup_s=0.0,
    free_gpus=None,
    state=None,
    tuning=None,
    pending=(),
):
    """One tick with these inputs as a ScalingContext; `tuning` as its research sizing."""
    ctx = ScalingContext(
        spec, samples, now, 0, current_replicas, in_system_now, replica_startup_s, node_startup_s, free_gpus
    )
    sizing = DEFAULT_SIZING if tuning is None else TunedSizing(tuning, pending)
    return decide_in_context(ctx, state, sizing)


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


def test_a_burst_onset_is_scaled_by_the_slope_of_the_panic_window():
    # Quiet for 16 s, then 8 more requests every 2 s: over the 20 s lead window the least-squares
    # slope is 0.95 req/s, over the 6 s panic window (the last three samples) 4 req/s.
    samples = [Sample(time=float(t), concurrency=0.0) for t in range(2, 17, 2)]
    samples += [Sample(time=18.0, concurrency=8.0), Sample(time=20.0, concurrency=16.0)]
    assert SPEC.panic_window_seconds == 6
    assert concurrency_slope(samples) < 1
    d = predictive_decide(SPEC, samples, now=20, current_replicas=1, in_system_now=16, replica_startup_s=20)
    assert d.demand_forecast == 96  # 16 now + 4 req/s * 20 s
    assert d.desired == 6
    # Without the onset slope: 16 + (200 / 330 req/s over the lead window) * 20 s = 28.1, 2 replicas;
    # the other 4 are held for load not seen yet.
    assert concurrency_slope(samples) == pytest.approx(200 / 330)
    assert d.speculative == 4


def test_surprise_is_the_peak_within_the_horizon_over_what_the_tick_asked():
    state = PredictiveState(asked=((0.0, 4), (30.0, 4)))
    samples = [Sample(time=10.0, concurrency=80.0), Sample(time=70.0, concurrency=200.0)]
    still, measured = measure_surprises(state, samples, SURPRISE_HORIZON_S, 16.0)
    assert still == ((30.0, 4),)  # not a horizon old yet
    assert measured == ((0.0, 80.0 / 16 / 4),)  # the sample at 70 s is past its horizon
    old = PredictiveState(surprises=((0.0, 2.0),))
    assert measure_surprises(old, [], SURPRISE_MEMORY_S, 16.0) == ((), ())


def test_observed_headroom_is_a_high_quantile_between_one_and_its_cap():
    assert observed_headroom([]) == 1.0
    assert observed_headroom([(0.0, 0.5)] * 10) == 1.0  # bursts smaller than held: no headroom
    assert observed_headroom([(0.0, 1.1)] * 10) == pytest.approx(1.1)
    assert observed_headroom([(0.0, 1.0)] * 99 + [(0.0, 3.0)]) == 1.0  # one spike in 100 is ignored
    assert observed_headroom([(0.0, 3.0)] * 10) == MAX_HEADROOM


def test_observed_headroom_multiplies_the_held_peak():
    spec = SPEC.model_copy(update={"scale_to_zero_idle_seconds": 1000})
    samples = [Sample(time=0, concurrency=64), Sample(time=2, concurrency=0)]
    kwargs = {"current_replicas": 4, "in_system_now": 0, "replica_startup_s": 20}
    calm = predictive_decide(spec, samples, now=100, **kwargs)
    assert (calm.desired, calm.speculative) == (4, 0)
    surprised = PredictiveState(surprises=((90.0, 1.25),) * 5)
    d = predictive_decide(spec, samples, now=100, state=surprised, **kwargs)
    assert (d.desired, d.speculative) == (5, 1)  # 4 x 1.25; the fifth is headroom


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


def test_work_need_is_the_largest_window_rate_over_its_deadline():
    samples = [
        Sample(time=0, concurrency=0),
        Sample(2, 0, arrived_work=8000),
        Sample(4, 0, arrived_work=24000),
    ]
    # (2, 4]: 24000 / (8000 * (2 + 2)) = 0.75; (0, 4]: 32000 / (8000 * (4 + 2)) = 0.667
    assert work_need(samples, now=4, throughput=8000, slack_s=2, windows_s=60) == 0.75
    # a 1 s cap on the windows leaves none whole
    assert work_need(samples, now=4, throughput=8000, slack_s=2, windows_s=1) == 0.0


def test_held_level_decays_by_half_lives_or_holds_in_a_window():
    levels = [(0.0, 8.0), (100.0, 4.0)]
    assert held_level(levels, now=200, half_life_s=100, window_s=0) == 2.0  # 8 / 4 and 4 / 2
    assert held_level(levels, now=200, half_life_s=None, window_s=150) == 4.0  # the 8 left the window


def test_remember_drops_old_and_hidden_levels():
    levels = ((0.0, 8.0), (10.0, 5.0))
    assert remember(levels, now=20, level=6.0, keep_s=100) == ((0.0, 8.0), (20.0, 6.0))
    assert remember(levels, now=20, level=6.0, keep_s=15) == ((20.0, 6.0),)


def test_work_memory_holds_a_burst_and_lets_it_decay():
    spec = SPEC.model_copy(update={"scale_to_zero_idle_seconds": 1000})
    tuning = HoldTuning(signal="work", half_life_s=60, replica_throughput=8000)
    samples = [Sample(time=0, concurrency=0), Sample(2, 0, arrived_work=128000)]
    kwargs = {"current_replicas": 1, "in_system_now": 0, "replica_startup_s": 20, "tuning": tuning}
    burst = predictive_decide(spec, samples, now=2, **kwargs)
    assert burst.desired == 4  # 128000 / (8000 * (2 + 2))
    samples.append(Sample(62, 0))
    later = predictive_decide(spec, samples, now=62, state=burst.state, **kwargs)
    assert later.desired == 2  # 4 halved after one half-life; nothing new arrived in 60 s
    samples.append(Sample(122, 0))
    assert predictive_decide(spec, samples, now=122, state=later.state, **kwargs).desired == 1


def test_work_memory_needs_the_replica_throughput():
    with pytest.raises(ValueError, match="replica_throughput"):
        HoldTuning(signal="work")


def test_deadline_need_is_the_work_due_by_each_deadline_over_the_time_left():
    # due by 4: 16000 / (8000 * 2) = 1.0; due by 10: 24000 / (8000 * 8) = 0.375
    assert deadline_need([(10.0, 8000.0), (4.0, 16000.0)], now=2, throughput=8000) == 1.0
    # a deadline already passed counts as due within the 2 s horizon: 8000 / (8000 * 2)
    assert deadline_need([(1.0, 8000.0)], now=2, throughput=8000) == 0.5
    assert deadline_need([], now=2, throughput=8000) == 0.0


def test_deadline_sizing_replaces_the_request_count():
    tuning = HoldTuning(reactive="deadline", replica_throughput=8000)
    kwargs = {"now": 2, "current_replicas": 1, "in_system_now": 40, "replica_startup_s": 20}
    by_count = predictive_decide(SPEC, [], **kwargs)
    assert by_count.desired == 3  # ceil(40 / 16)
    # 40 short requests, 64000 units due in 4 s: 64000 / (8000 * 4) = 2 replicas
    by_work = predictive_decide(SPEC, [], tuning=tuning, pending=[(6.0, 1600.0)] * 40, **kwargs)
    assert by_work.desired == 2


def test_headroom_multiplies_what_is_held_not_the_demand_now():
    spec = SPEC.model_copy(update={"scale_to_zero_idle_seconds": 1000})
    tuning = HoldTuning(signal="work", half_life_s=60, replica_throughput=8000, headroom=1.5)
    samples = [Sample(time=0, concurrency=0), Sample(2, 0, arrived_work=64000)]
    kwargs = {"current_replicas": 1, "in_system_now": 0, "replica_startup_s": 20, "tuning": tuning}
    burst = predictive_decide(spec, samples, now=2, **kwargs)
    assert burst.desired == 3  # 64000 / (8000 * 4) = 2 remembered, held at 1.5 x 2
    with pytest.raises(ValueError, match="headroom"):
        HoldTuning(headroom=0.5)


def test_no_scale_down_while_replicas_asked_for_are_starting():
    spec = SPEC.model_copy(update={"scale_down_stabilization_seconds": 0})
    quiet = [Sample(time=2, concurrency=4)]

    def decide(starting: int) -> int:
        ctx = ScalingContext(spec, quiet, 2, ready=3, current=3 + starting, in_system=4,
                             replica_startup_s=20, starting=starting)  # fmt: skip
        return decide_in_context(ctx).desired

    assert decide(starting=0) == 1  # ceil(4 / 16): the demand alone
    assert decide(starting=2) == 5  # the 2 starting replicas and the 3 ready ones are kept
