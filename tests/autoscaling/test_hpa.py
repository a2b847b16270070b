"""HPA decisions with target 10 per replica (tolerance 0.1, 300 s scale-down stabilization)."""

from __future__ import annotations

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.hpa import HPAState, hpa_decide

SPEC = AutoscalingSpec(policy="hpa", target=10, target_utilization=1.0, min_replicas=1, max_replicas=50)


def test_within_tolerance_keeps_the_count():
    assert hpa_decide(SPEC, 0, 4, 10.9).desired == 4
    assert hpa_decide(SPEC, 0, 4, 9.1).desired == 4


def test_scale_up_is_ceil_of_current_times_ratio():
    d = hpa_decide(SPEC, 0, 4, 15)
    assert (d.recommendation, d.desired) == (6, 6)


def test_scale_up_policy_limits_to_max_of_four_pods_or_double():
    assert hpa_decide(SPEC, 0, 2, 100).desired == 6  # max(2 + 4, 2 * 2)
    assert hpa_decide(SPEC, 0, 10, 100).desired == 20  # max(10 + 4, 10 * 2)


def test_scale_up_policy_counts_changes_within_the_period():
    first = hpa_decide(SPEC, 0, 2, 100)
    same_period = hpa_decide(SPEC, 10, 6, 100, first.state)
    assert same_period.desired == 6  # the period started at 2 replicas: limit still 6
    next_period = hpa_decide(SPEC, 16, 6, 100, same_period.state)
    assert next_period.desired == 12


def test_scale_down_waits_for_the_stabilization_window():
    state = hpa_decide(SPEC, 0, 8, 10).state  # recommends 8 at t=0
    held = hpa_decide(SPEC, 100, 8, 5, state)
    assert (held.recommendation, held.desired) == (4, 8)
    later = hpa_decide(SPEC, 301, 8, 5, held.state)  # t=0 has left the 300 s window
    assert later.desired == 4


def test_never_below_one_or_min():
    assert hpa_decide(SPEC, 0, 3, 0).desired == 1
    spec = SPEC.model_copy(update={"min_replicas": 2})
    assert hpa_decide(spec, 0, 3, 0).desired == 2
    assert hpa_decide(SPEC, 0, 0, 0).desired == 1


def test_state_forgets_old_entries():
    state = HPAState(recommendations=((0.0, 9),), changes=((0.0, 3),))
    d = hpa_decide(SPEC, 1000, 4, 10, state)
    assert all(t > 600 for t, _ in d.state.recommendations) and d.state.changes == ()
