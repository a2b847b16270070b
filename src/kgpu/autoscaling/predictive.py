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
4. never scales down while replicas it asked for are still starting: a scale-down removes the
   replicas that do not serve yet first (as Kubernetes does), so a dip in the demand in the middle
   of a burst would stop replicas seconds before they serve, and the next tick would start them
   again and pay their start-up twice; once they serve, the rules above decide;
5. goes to zero only after ``scaleToZeroIdleSeconds`` without any request, and never below
   ``minReplicas`` or above ``maxReplicas``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kgpu.autoscaling.context import ScalingContext
from kgpu.autoscaling.window import Sample, in_window


@dataclass(frozen=True)
class PredictiveState:
    last_busy_at: float | None = None  # last time any request was in the system
    # Burst memory of a HoldTuning: (time, replicas) at each tick, newer entries below older ones.
    levels: tuple[tuple[float, float], ...] = ()


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


class Sizing:
    """How the policy sizes the demand now and remembers bursts: the default here (the request count
    over the target; the peak concurrency of the stabilization window). Research variants replayed by
    the benchmarks live in `kgpu.sim.hold_tuning`."""

    def want_now(self, ctx: ScalingContext, demand_now: float) -> int:
        """Replicas the demand now needs."""
        return math.ceil(demand_now / ctx.spec.target_per_replica)

    def peak(
        self, ctx: ScalingContext, levels: tuple, last: float, forecast: float, growth: float
    ) -> tuple[int, tuple]:
        """Replicas to keep for bursts, and the burst memory to pass on."""
        held = in_window(ctx.samples, ctx.now, ctx.spec.scale_down_stabilization_seconds)
        return math.ceil(
            max([s.concurrency for s in held] + [forecast]) / ctx.spec.target_per_replica
        ), levels

    def sustained(self, ctx: ScalingContext, concurrency: float) -> float:
        """The sustained demand that may ask for new nodes."""
        return concurrency


DEFAULT_SIZING = Sizing()


def predictive_decide(
    ctx: ScalingContext, state: PredictiveState | None = None, sizing: Sizing = DEFAULT_SIZING
) -> PredictiveDecision:
    """One tick at ``ctx.now`` (see the module's docstring); ``sizing`` is the policy's own unless a
    research variant replaces it."""
    state = state or PredictiveState()
    spec, samples, now = ctx.spec, ctx.samples, ctx.now
    target = spec.target_per_replica
    last = samples[-1].concurrency if samples else 0.0
    demand_now = max(last, ctx.in_system)
    want_now = sizing.want_now(ctx, demand_now)
    room = math.inf if ctx.free_gpus is None else ctx.free_gpus
    needs_node = want_now - ctx.current > room
    lead = ctx.replica_startup_s + (ctx.node_startup_s if needs_node else 0.0)
    recent = in_window(samples, now, max(lead, spec.panic_window_seconds))
    growth = max(0.0, concurrency_slope(recent)) * lead
    forecast = demand_now + growth

    # Bursts: the peak of the stabilization window, sized on GPUs that are free now. A burst
    # shorter than a node's start-up is over before a new node could serve it, so only
    # demand sustained over that lead time (its window average, plus trend) asks for nodes.
    peak_replicas, levels = sizing.peak(ctx, state.levels, last, forecast, growth)
    on_free_gpus = min(peak_replicas, ctx.current + room)
    sustained = sizing.sustained(
        ctx, sum(s.concurrency for s in recent) / len(recent) if recent else demand_now
    )
    desired = max(on_free_gpus, math.ceil(sustained / target))
    if ctx.starting:
        desired = max(desired, ctx.ready + ctx.starting)

    # The idle clock starts at the first look, so a fresh service is not dropped at once.
    last_busy = now if demand_now > 0 or state.last_busy_at is None else state.last_busy_at
    idle_for = now - last_busy
    if desired == 0 and ctx.current > 0 and idle_for < spec.scale_to_zero_idle_seconds:
        desired = 1
    desired = spec.clamp(desired)
    return PredictiveDecision(desired, PredictiveState(last_busy, levels), demand_now, forecast, lead)
