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
from typing import Literal

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.window import Sample, in_window


@dataclass(frozen=True)
class PredictiveState:
    last_busy_at: float | None = None  # last time any request was in the system
    # Burst memory of a HoldTuning: (time, replicas) at each tick, newer entries below older ones.
    levels: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class HoldTuning:
    """How the policy remembers bursts, when not by its default (the peak concurrency of a fixed window).

    ``signal``: what a tick records as the replicas a burst needs: ``"concurrency"``, the last
    sample's concurrency over the target (the default memory's measure); ``"work"``, the work that arrived in
    the trailing windows (up to ``windows_s``) over what ``replica_throughput`` (work units/s of one
    replica at its full-speed batch, a property of the model server) finishes in the window plus
    ``slack_s`` (the shortest SLO slack), i.e. the replicas that would have served those arrivals
    in time. ``half_life_s``: the recorded level decays by half every so many seconds; None holds it
    in full for ``scaleDownStabilizationSeconds``. Nothing older than ``memory_s`` is kept.
    ``headroom`` multiplies what is held (not the demand now): room for a burst larger than the
    ones remembered.
    """

    signal: Literal["concurrency", "work"] = "concurrency"
    half_life_s: float | None = None
    replica_throughput: float | None = None
    slack_s: float = 2.0
    windows_s: float = 60.0
    memory_s: float = 900.0
    headroom: float = 1.0  # the remembered level times this: the next burst may be larger
    # "deadline": size the demand now by the work waiting and in flight against its deadlines
    # (deadline_need) instead of by the request count over the target.
    reactive: Literal["concurrency", "deadline"] = "concurrency"

    def __post_init__(self) -> None:
        if (self.signal == "work" or self.reactive == "deadline") and not self.replica_throughput:
            raise ValueError("the work signal and deadline sizing need replica_throughput")
        if self.headroom < 1:
            raise ValueError(f"headroom must be >= 1, got {self.headroom}")
        if self.half_life_s is not None and self.half_life_s <= 0:
            raise ValueError(f"half_life_s must be > 0, got {self.half_life_s}")


def work_need(
    samples: Sequence[Sample], now: float, throughput: float, slack_s: float, windows_s: float
) -> float:
    """Replicas that would have served the work arrived in the trailing windows by their deadlines.

    For each window (now - d, now] made of whole samples, up to ``windows_s`` long: arrived work
    over ``throughput * (d + slack_s)``; the largest over the windows. The fluid bound of
    earliest-deadline-first: work that arrives within d and must be done slack_s after it.
    """
    need, acc = 0.0, 0.0
    # Sample i covers (samples[i-1].time, samples[i].time]; the oldest one's start is unknown.
    for i in range(len(samples) - 1, 0, -1):
        s, start = samples[i], samples[i - 1].time
        if s.time > now or now - start > windows_s + 1e-9:
            break
        acc += s.arrived_work
        need = max(need, acc / (throughput * (now - start + slack_s)))
    return need


def deadline_need(
    pending: Sequence[tuple[float, float]], now: float, throughput: float, min_horizon_s: float = 2.0
) -> float:
    """Replicas that finish the pending work by its deadlines: ``pending`` holds (deadline, work left).

    Earliest deadline first on a pool of replicas is feasible when, for every deadline d, the work
    due by d fits in ``throughput * (d - now)`` per replica; the largest ratio is the replicas
    needed. A deadline already passed (or nearer than ``min_horizon_s``) counts as that horizon:
    late work is wanted as soon as possible.
    """
    need, acc = 0.0, 0.0
    for deadline, work in sorted(pending):
        acc += work
        need = max(need, acc / (throughput * max(deadline - now, min_horizon_s)))
    return need


def held_level(
    levels: Sequence[tuple[float, float]], now: float, half_life_s: float | None, window_s: float
) -> float:
    """The largest remembered level: decayed by its age, or in full within the window."""
    best = 0.0
    for t, level in levels:
        if half_life_s is None:
            if now - t < window_s:
                best = max(best, level)
        else:
            best = max(best, level * 0.5 ** ((now - t) / half_life_s))
    return best


def remember(
    levels: tuple[tuple[float, float], ...], now: float, level: float, keep_s: float
) -> tuple[tuple[float, float], ...]:
    """Add ``(now, level)``; drop what is older than ``keep_s`` and what a newer, higher level hides."""
    kept = [(t, v) for t, v in levels if now - t < keep_s and v > level]
    return (*kept, (now, level))


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
    tuning: HoldTuning | None = None,
    pending: Sequence[tuple[float, float]] = (),
) -> PredictiveDecision:
    """One tick at ``now``.

    ``current_replicas`` counts ready and starting replicas; ``in_system_now`` is the live
    number of requests in flight plus queued at the gateway; ``free_gpus`` is how many more
    replicas can start without a new node (None: unlimited). ``tuning`` replaces the default
    burst memory (see HoldTuning); ``pending`` is (deadline, estimated work left) of every
    request waiting or in flight, for its deadline sizing.
    """
    state = state or PredictiveState()
    target = spec.target_per_replica
    last = samples[-1].concurrency if samples else 0.0
    demand_now = max(last, in_system_now)

    # Deadline sizing: the replicas the work due needs, in place of the request count over the target.
    by_deadline = tuning is not None and tuning.reactive == "deadline"
    deadline_replicas = 0.0
    if by_deadline:
        assert tuning is not None and tuning.replica_throughput is not None
        deadline_replicas = deadline_need(pending, now, tuning.replica_throughput)
    want_now = math.ceil(deadline_replicas - 1e-9) if by_deadline else math.ceil(demand_now / target)
    room = math.inf if free_gpus is None else free_gpus
    needs_node = want_now - current_replicas > room
    lead = replica_startup_s + (node_startup_s if needs_node else 0.0)
    recent = in_window(samples, now, max(lead, spec.panic_window_seconds))
    growth = max(0.0, concurrency_slope(recent)) * lead
    forecast = demand_now + growth

    # Bursts: the peak of the stabilization window, sized on GPUs that are free now. A burst
    # shorter than a node's start-up is over before a new node could serve it, so only
    # demand sustained over that lead time (its window average, plus trend) asks for nodes.
    levels = state.levels
    if tuning is None:
        held = in_window(samples, now, spec.scale_down_stabilization_seconds)
        peak_replicas = math.ceil(max([s.concurrency for s in held] + [forecast]) / target)
    else:
        if tuning.signal == "work":
            assert tuning.replica_throughput is not None
            level = work_need(samples, now, tuning.replica_throughput, tuning.slack_s, tuning.windows_s)
        else:
            level = last / target
        keep = tuning.memory_s if tuning.half_life_s is not None else spec.scale_down_stabilization_seconds
        levels = remember(levels, now, level, keep)
        hold = tuning.headroom * held_level(
            levels, now, tuning.half_life_s, spec.scale_down_stabilization_seconds
        )
        now_replicas = deadline_replicas + growth / target if by_deadline else forecast / target
        peak_replicas = math.ceil(max(hold, now_replicas) - 1e-9)
    on_free_gpus = min(peak_replicas, current_replicas + room)
    sustained = sum(s.concurrency for s in recent) / len(recent) if recent else demand_now
    if by_deadline:
        sustained = min(sustained, deadline_replicas * target)  # nodes only for work due, too
    desired = max(on_free_gpus, math.ceil(sustained / target))

    # The idle clock starts at the first look, so a fresh service is not dropped at once.
    last_busy = now if demand_now > 0 or state.last_busy_at is None else state.last_busy_at
    idle_for = now - last_busy
    if desired == 0 and current_replicas > 0 and idle_for < spec.scale_to_zero_idle_seconds:
        desired = 1
    desired = spec.clamp(desired)
    return PredictiveDecision(desired, PredictiveState(last_busy, levels), demand_now, forecast, lead)
