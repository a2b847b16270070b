"""kgpu's replica policy: provision now for the load expected when new capacity is ready.

What KPA and HPA ignore and the gateway knows exactly: the requests waiting in its queue
right now, and how long a new replica (and, without a free GPU, a new node) takes before it
serves. The policy

1. sizes for the demand now: the larger of the last sample and the live count (in flight
   plus queued), so a burst is answered on the next tick instead of after a window average;
2. adds the demand growth expected over the lead time (the replica start-up time, plus the
   node start-up time when no GPU is free), from the trend of the recent samples;
3. keeps capacity for the peak of the last ``scaleDownStabilizationSeconds`` on the GPUs that
   are free: bursts recur, and a replica given back too early costs a full start-up the next
   time; a burst shorter than a node's start-up is over before the node joins, so only demand
   sustained over that lead time asks for more nodes;
4. goes to zero only after ``scaleToZeroIdleSeconds`` without any request, and never below
   ``minReplicas`` or above ``maxReplicas``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.window import Sample, in_window


@dataclass(frozen=True)
class PredictiveState:
    last_busy_at: float | None = None  # last time any request was in the system


@dataclass(frozen=True)
class PredictiveDecision:
    desired: int
    state: PredictiveState
    demand_now: float
    demand_forecast: float
    lead_time_s: float


def concurrency_slope(samples: Sequence[Sample]) -> float:
    """Least-squares slope of concurrency over time (requests per second); 0 with fewer than two samples."""
    if len(samples) < 2:
        return 0.0
    mean_t = sum(s.time for s in samples) / len(samples)
    mean_c = sum(s.concurrency for s in samples) / len(samples)
    var = sum((s.time - mean_t) ** 2 for s in samples)
    if var == 0:
        return 0.0
    return sum((s.time - mean_t) * (s.concurrency - mean_c) for s in samples) / var


def predictive_decide(
    spec: AutoscalingSpec,
    samples: Sequence[Sample],
    now: float,
    current_replicas: int,
    in_system_now: float,
    replica_startup_s: float,
    node_startup_s: float = 0.0,
    free_gpus: int | None = None,
    state: PredictiveState | None = None,
) -> PredictiveDecision:
    """One tick at ``now``.

    ``current_replicas`` counts ready and starting replicas; ``in_system_now`` is the live
    number of requests in flight plus queued at the gateway; ``free_gpus`` is how many more
    replicas can start without a new node (None: unlimited).
    """
    state = state or PredictiveState()
    target = spec.target_per_replica
    last = samples[-1].concurrency if samples else 0.0
    demand_now = max(last, in_system_now)

    want_now = math.ceil(demand_now / target)
    room = math.inf if free_gpus is None else free_gpus
    needs_node = want_now - current_replicas > room
    lead = replica_startup_s + (node_startup_s if needs_node else 0.0)
    recent = in_window(samples, now, max(lead, spec.panic_window_seconds))
    growth = max(0.0, concurrency_slope(recent)) * lead
    forecast = demand_now + growth

    # Bursts: the peak of the stabilization window, sized on GPUs that are free now. A burst
    # shorter than a node's start-up is over before a new node could serve it, so only
    # demand sustained over that lead time (its window average, plus trend) asks for nodes.
    held = in_window(samples, now, spec.scale_down_stabilization_seconds)
    peak = max([s.concurrency for s in held] + [forecast])
    on_free_gpus = min(math.ceil(peak / target), current_replicas + room)
    sustained = sum(s.concurrency for s in recent) / len(recent) if recent else demand_now
    desired = max(on_free_gpus, math.ceil(sustained / target))

    # The idle clock starts at the first look, so a fresh service is not dropped at once.
    last_busy = now if demand_now > 0 or state.last_busy_at is None else state.last_busy_at
    idle_for = now - last_busy
    if desired == 0 and current_replicas > 0 and idle_for < spec.scale_to_zero_idle_seconds:
        desired = 1
    desired = spec.clamp(desired)
    return PredictiveDecision(desired, PredictiveState(last_busy), demand_now, forecast, lead)
