"""KPA decisions checked against the reference formulas, with target 10 per replica."""

from __future__ import annotations

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.kpa import KPAState, kpa_decide
from kgpu.autoscaling.window import Sample


def spec(**changes) -> AutoscalingSpec:
    values = {"target": 10.0, "target_utilization": 1.0, "max_replicas": 100, "min_replicas": 0}
    return AutoscalingSpec(**(values | changes))


def flat(value: float, start: float = 2, end: float = 60) -> list[Sample]:
    return [Sample(time=float(t), concurrency=value) for t in range(int(start), int(end) + 1, 2)]


def test_stable_mode_desired_is_ceil_of_stable_average_over_target():
    d = kpa_decide(spec(), flat(25), now=60, ready_replicas=2)
    assert (d.desired, d.panicking) == (3, False)  # ceil(25 / 10); 3 / 2 < 2: no panic
    assert d.stable_concurrency == 25


def burst_samples() -> list[Sample]:
    # 27 samples at 10 then 3 at 50 inside the 6 s panic window: stable avg 14, panic avg 50.
    return flat(10, 2, 54) + flat(50, 56, 60)


def test_panic_entry_uses_panic_average():
    d = kpa_decide(spec(), burst_samples(), now=60, ready_replicas=1)
    assert d.stable_concurrency == 14 and d.panic_concurrency == 50
    assert d.panicking and d.state.panic_since == 60
    assert d.desired == 5  # ceil(50 / 10), not the stable ceil(14 / 10) = 2


def test_no_panic_just_below_threshold():
    # panic count 3 over 2 ready = 1.5 < 2.0
    d = kpa_decide(spec(), flat(10, 2, 54) + flat(30, 56, 60), now=60, ready_replicas=2)
    assert not d.panicking


def test_in_panic_never_scales_down_and_exits_after_a_stable_window():
    first = kpa_decide(spec(), burst_samples(), now=60, ready_replicas=1)
    calm = [*burst_samples(), *flat(0, 62, 200)]
    # Load gone, but panic started at 60: still panicking through 60 + 60 s and holding 5.
    held = kpa_decide(spec(), calm, now=120, ready_replicas=5, state=first.state)
    assert held.panicking and held.desired == 5
    # More than one stable window after panic started and not over threshold: back to stable.
    out = kpa_decide(spec(), calm, now=122, ready_replicas=5, state=held.state)
    assert not out.panicking and out.state.max_panic_replicas == 0
    assert out.desired == 2  # stable avg 0 -> 0, limited by max scale-down floor(5 / 2) = 2


def test_scale_up_rate_limit():
    d = kpa_decide(spec(max_scale_up_rate=2.0), flat(100), now=60, ready_replicas=2)
    assert d.desired == 4  # ceil(2 * 2), not ceil(100 / 10) = 10


def test_scale_down_rate_limit():
    d = kpa_decide(spec(), flat(0), now=60, ready_replicas=8)
    assert d.desired == 4  # floor(8 / 2)


def test_scale_to_zero_only_after_the_idle_time():
    s = spec(scale_to_zero_idle_seconds=30)
    state = KPAState(last_nonzero_at=80)
    assert kpa_decide(s, flat(0, 50, 100), now=100, ready_replicas=1, state=state).desired == 1
    assert kpa_decide(s, flat(0, 50, 110), now=110, ready_replicas=1, state=state).desired == 0


def test_grace_period_starts_at_the_first_look():
    s = spec(scale_to_zero_idle_seconds=30)
    first = kpa_decide(s, [], now=10, ready_replicas=1)
    assert first.desired == 1 and first.state.last_nonzero_at == 10
    assert kpa_decide(s, [], now=40, ready_replicas=1, state=first.state).desired == 0


def test_never_below_min_nor_above_max():
    assert kpa_decide(spec(min_replicas=2), flat(0), now=60, ready_replicas=2).desired == 2
    assert kpa_decide(spec(max_replicas=3), flat(1000), now=60, ready_replicas=2).desired == 3


def test_excess_burst_capacity():
    # floor(3 ready * 100 total - 211 - panic avg 50)
    d = kpa_decide(spec(target=100), flat(50), now=60, ready_replicas=3)
    assert d.excess_burst_capacity == 39
