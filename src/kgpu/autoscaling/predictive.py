"""kgpu's replica policy: provision now for the load expected when new capacity is ready.

What KPA and HPA ignore and the gateway knows exactly: the requests waiting in its queue
right now, and how long a new replica (and, without a free GPU, a new node) takes before it
serves. The policy

1. sizes for the demand now: the larger of the last sample and the live count (in flight
   plus queued), so a burst is answered on the next tick instead of after a window average;
2. adds the demand growth expected over the lead time (the replica start-up time, plus the
   node start-up time when no GPU is free), from the trend of the recent samples: the steeper of
   the trend over the lead time and over the panic window (its last few samples), so a burst's
   onset is scaled by its slope on the tick it shows, before a window as long as a start-up
   averages the slope down;
3. keeps capacity for the peak of the last ``scaleDownStabilizationSeconds`` on the GPUs that
   are free: bursts recur, and a replica given back too early costs a full start-up the next
   time; a burst shorter than a node's start-up is over before the node joins, so only demand
   sustained over that lead time asks for more nodes. That capacity gets headroom scaled to how
   much bursts have outgrown it lately (`observed_headroom`): every tick records what it held,
   and ``SURPRISE_HORIZON_S`` later the peak concurrency that came in the meantime over it; a
   high quantile of those ratios over the last ``SURPRISE_MEMORY_S`` multiplies what is held (at
   most ``MAX_HEADROOM``). A steady load leaves it at 1; a trace whose bursts outgrow the
   memory gets more room before the next one;
4. never scales down while replicas it asked for are still starting: a scale-down removes the
   replicas that do not serve yet first (as Kubernetes does), so a dip in the demand in the middle
   of a burst would stop replicas seconds before they serve, and the next tick would start them
   again and pay their start-up twice; once they serve, the rules above decide;
5. goes to zero only after ``scaleToZeroIdleSeconds`` without any request, and never below
   ``minReplicas`` or above ``maxReplicas``.

The decision says which of its replicas are speculative: those beyond what the same rules give
without the panic window's onset slope and without the observed headroom, i.e. held for load that
has not been seen in any window yet. On one cluster they are placed like the others (rule 3 keeps
them on free GPUs); a split over several clusters places them only on capacity booted now at the
lowest price the service's clusters offer (`kgpu.multicluster.placement.place_speculative`), so a
guess never buys a dear cluster's GPUs, while the load seen is placed as before.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from kgpu.autoscaling.context import ScalingContext
from kgpu.autoscaling.window import Sample, in_window

# Observed headroom (rule 3). Chosen on the judged trace versions of `bench.replay_matched` and
# checked on its held-out ones: the horizon is three replica start-ups (a burst that outgrows what
# is held within it is served by what was held); the 95th percentile ignores the odd spike; the cap
# keeps a run of surprises from holding a whole node; half an hour is a few bursts of the trace.
SURPRISE_HORIZON_S = 60.0
SURPRISE_QUANTILE = 0.95
SURPRISE_MEMORY_S = 1800.0
MAX_HEADROOM = 1.25


@dataclass(frozen=True)
class PredictiveState:
    last_busy_at: float | None = None  # last time any request was in the system
    # Burst memory of a HoldTuning: (time, replicas) at each tick, newer entries below older ones.
    levels: tuple[tuple[float, float], ...] = ()
    # (time, replicas asked) of the ticks whose surprise is not measured yet, oldest first.
    asked: tuple[tuple[float, int], ...] = ()
    # (time, peak replicas needed within the horizon over those asked) of the ticks measured.
    surprises: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class PredictiveDecision:
    desired: int
    state: PredictiveState
    demand_now: float
    demand_forecast: float
    lead_time_s: float
    # Replicas of ``desired`` beyond what the load seen so far asks for (the observed headroom and
    # the onset slope's forecast): a split over clusters buys them only at the lowest price.
    speculative: int = 0


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


def measure_surprises(
    state: PredictiveState, samples: Sequence[Sample], now: float, target: float
) -> tuple[tuple[tuple[float, int], ...], tuple[tuple[float, float], ...]]:
    """Resolve the ticks at least ``SURPRISE_HORIZON_S`` old: the peak concurrency of the samples
    within the horizon after each, in replicas, over what it asked; returns (still open, measured)."""
    still = []
    surprises = [(t, r) for t, r in state.surprises if now - t < SURPRISE_MEMORY_S]
    for t, asked in state.asked:
        if now - t < SURPRISE_HORIZON_S:
            still.append((t, asked))
            continue
        seen = [s.concurrency for s in samples if t < s.time <= t + SURPRISE_HORIZON_S]
        if seen and now - t < SURPRISE_MEMORY_S:
            surprises.append((t, max(seen) / target / max(asked, 1)))
    return tuple(still), tuple(surprises)


def observed_headroom(surprises: Sequence[tuple[float, float]]) -> float:
    """The ``SURPRISE_QUANTILE`` of the measured ratios, between 1 and ``MAX_HEADROOM``."""
    if not surprises:
        return 1.0
    ratios = sorted(r for _, r in surprises)
    quantile = ratios[min(len(ratios) - 1, int(SURPRISE_QUANTILE * len(ratios)))]
    return min(MAX_HEADROOM, max(1.0, quantile))


class Sizing:
    """How the policy sizes the demand now and remembers bursts: the default here (the request count
    over the target; the peak concurrency of the stabilization window). Research variants replayed by
    the benchmarks live in `kgpu.sim.hold_tuning`."""

    def want_now(self, ctx: ScalingContext, demand_now: float) -> int:
        """Replicas the demand now needs."""
        return math.ceil(demand_now / ctx.spec.target_per_replica)

    # Whether the held level gets the observed headroom (rule 3); a research memory brings its own.
    takes_observed_headroom = True

    def peak(
        self, ctx: ScalingContext, levels: tuple, last: float, forecast: float, growth: float
    ) -> tuple[float, tuple]:
        """Replicas to keep for bursts (a level, before rounding up), and the burst memory to pass on."""
        held = in_window(ctx.samples, ctx.now, ctx.spec.scale_down_stabilization_seconds)
        return max([s.concurrency for s in held] + [forecast]) / ctx.spec.target_per_replica, levels

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
    onset = in_window(samples, now, spec.panic_window_seconds)
    trend = max(0.0, concurrency_slope(recent))
    growth = max(trend, concurrency_slope(onset)) * lead
    forecast = demand_now + growth
    sustained = sizing.sustained(
        ctx, sum(s.concurrency for s in recent) / len(recent) if recent else demand_now
    )

    def replicas_for(forecast: float, growth: float, headroom: float) -> tuple[int, tuple]:
        # Bursts: the peak of the stabilization window, sized on GPUs that are free now. A burst
        # shorter than a node's start-up is over before a new node could serve it, so only
        # demand sustained over that lead time (its window average, plus trend) asks for nodes.
        level, levels = sizing.peak(ctx, state.levels, last, forecast, growth)
        peak_replicas = math.ceil(level * (headroom if sizing.takes_observed_headroom else 1.0) - 1e-9)
        on_free_gpus = min(peak_replicas, ctx.current + room)
        wanted = max(on_free_gpus, math.ceil(sustained / target))
        if ctx.starting:
            wanted = max(wanted, ctx.ready + ctx.starting)
        return wanted, levels

    asked, surprises = measure_surprises(state, samples, now, target)
    desired, levels = replicas_for(forecast, growth, observed_headroom(surprises))
    # The same rules without the onset slope and the headroom: what the load seen so far asks for.
    seen, _ = replicas_for(demand_now + trend * lead, trend * lead, 1.0)

    # The idle clock starts at the first look, so a fresh service is not dropped at once.
    last_busy = now if demand_now > 0 or state.last_busy_at is None else state.last_busy_at
    idle_for = now - last_busy
    if desired == 0 and ctx.current > 0 and idle_for < spec.scale_to_zero_idle_seconds:
        desired = 1
    desired = spec.clamp(desired)
    speculative = max(0, desired - spec.clamp(max(seen, 1 if desired else 0)))
    asked = (*asked, (now, max(desired, 1)))
    state = PredictiveState(last_busy, levels, asked, surprises)
    return PredictiveDecision(desired, state, demand_now, forecast, lead, speculative)
