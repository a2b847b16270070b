"""Knative Pod Autoscaler (concurrency) semantics: stable and panic windows, rate limits, scale to zero.

Follows knative/serving's autoscaler as summarised in the reference: desired counts from the
stable and panic averages, clamped by the scale-up and scale-down rates of the ready count;
panic is entered when the panic desired count is at least ``panicThreshold`` times the ready
count, and left once it is no longer and the panic started more than one stable window ago;
while panicking the count never goes down. Scale to zero happens only after the desired count
has been zero for ``scaleToZeroIdleSeconds`` (Knative's scale-to-zero grace period).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.window import Sample, window_average


@dataclass(frozen=True)
class KPAState:
    panic_since: float | None = None
    max_panic_replicas: int = 0
    # Last time the autoscaler wanted at least one replica; scale to zero waits a grace period after it.
    last_nonzero_at: float | None = None


@dataclass(frozen=True)
class KPADecision:
    desired: int
    state: KPAState
    panicking: bool
    stable_concurrency: float
    panic_concurrency: float
    excess_burst_capacity: float


def kpa_decide(
    spec: AutoscalingSpec,
    samples: Sequence[Sample],
    now: float,
    ready_replicas: int,
    state: KPAState | None = None,
    target_burst_capacity: float = 211.0,
) -> KPADecision:
    """One KPA tick at time ``now`` over the concurrency samples seen so far."""
    state = state or KPAState()
    target = spec.target_per_replica
    stable = window_average(samples, now, spec.stable_window_seconds)
    panic_avg = window_average(samples, now, spec.panic_window_seconds)

    ready = max(1, ready_replicas)
    max_up = math.ceil(spec.max_scale_up_rate * ready)
    max_down = math.floor(ready / spec.max_scale_down_rate)
    stable_count = math.ceil(stable / target)
    panic_count = math.ceil(panic_avg / target)
    desired_stable = min(max(stable_count, max_down), max_up)
    desired_panic = min(max(panic_count, max_down), max_up)

    over_threshold = panic_count / ready >= spec.panic_threshold
    panic_since, max_panic = state.panic_since, state.max_panic_replicas
    if panic_since is None and over_threshold:
        panic_since, max_panic = now, ready_replicas
    elif panic_since is not None and not over_threshold and now - panic_since > spec.stable_window_seconds:
        panic_since, max_panic = None, 0

    if panic_since is not None:
        # In panic the count only goes up: the surge has not reached the stable window yet.
        max_panic = max(max_panic, desired_panic)
        desired = max_panic
    else:
        desired = desired_stable

    last_nonzero = state.last_nonzero_at
    if desired > 0:
        last_nonzero = now
    elif ready_replicas > 0:
        # The grace period runs from the last time a replica was wanted (or from the first look).
        last_nonzero = now if last_nonzero is None else last_nonzero
        if now - last_nonzero < spec.scale_to_zero_idle_seconds:
            desired = 1
    desired = spec.clamp(desired)

    excess = math.floor(ready_replicas * spec.target - target_burst_capacity - panic_avg)
    new_state = replace(
        state, panic_since=panic_since, max_panic_replicas=max_panic, last_nonzero_at=last_nonzero
    )
    return KPADecision(desired, new_state, panic_since is not None, stable, panic_avg, excess)
