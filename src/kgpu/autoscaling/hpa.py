"""Kubernetes HorizontalPodAutoscaler semantics for one per-replica metric.

``desired = ceil(current * metric / target)``, skipped while the ratio is within the tolerance;
scale-down uses the highest recommendation of the stabilization window; scale-up is limited by
the default policies (the larger of +4 replicas and +100% per 15 s period) and scale-down by
100% per period. The HPA never scales to zero: it is clamped to at least one replica.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kgpu.api.autoscaling import AutoscalingSpec

POLICY_PERIOD_S = 15.0
SCALE_UP_PODS = 4
SCALE_UP_PERCENT = 100.0
SCALE_DOWN_PERCENT = 100.0


@dataclass(frozen=True)
class HPAState:
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, recommended replicas)
    changes: tuple[tuple[float, int], ...] = ()  # (time, replicas added; negative when removed)


@dataclass(frozen=True)
class HPADecision:
    desired: int
    state: HPAState
    recommendation: int
    ratio: float


def hpa_decide(
    spec: AutoscalingSpec,
    now: float,
    current_replicas: int,
    metric_per_replica: float,
    state: HPAState | None = None,
) -> HPADecision:
    """One HPA sync at ``now``; ``metric_per_replica`` is the average over ready replicas."""
    state = state or HPAState()
    lowest = max(1, spec.min_replicas)
    if current_replicas == 0:
        # Scaling is disabled at zero in Kubernetes; bring the service back to its minimum.
        desired = spec.clamp(lowest)
        return HPADecision(desired, _record(state, now, desired, desired - current_replicas), desired, 0.0)

    ratio = metric_per_replica / spec.target_per_replica
    recommendation = (
        current_replicas if abs(ratio - 1.0) <= spec.tolerance else math.ceil(current_replicas * ratio)
    )

    # Scale-down stabilization: the highest recommendation within the window wins.
    horizon = now - spec.scale_down_stabilization_seconds
    kept = (*tuple(r for r in state.recommendations if r[0] > horizon), (now, recommendation))
    desired = recommendation
    if recommendation < current_replicas:
        desired = min(current_replicas, max(n for _, n in kept))

    # Rate policies over the last period, measured from the replica count at its start.
    period_start = current_replicas - sum(d for t, d in state.changes if t > now - POLICY_PERIOD_S)
    up_limit = max(period_start + SCALE_UP_PODS, math.ceil(period_start * (1 + SCALE_UP_PERCENT / 100.0)))
    down_limit = math.ceil(period_start * (1 - SCALE_DOWN_PERCENT / 100.0))
    desired = max(down_limit, min(up_limit, desired))
    desired = max(lowest, spec.clamp(desired))

    changes = tuple(c for c in state.changes if c[0] > now - POLICY_PERIOD_S)
    if desired != current_replicas:
        changes += ((now, desired - current_replicas),)
    return HPADecision(desired, HPAState(kept, changes), recommendation, ratio)


def _record(state: HPAState, now: float, recommendation: int, change: int) -> HPAState:
    return HPAState((*state.recommendations, (now, recommendation)), (*state.changes, (now, change)))
