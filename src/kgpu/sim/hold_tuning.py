"""Research variants of kgpu's replica policy, replayed by the benchmarks (`bench/replay_robustness.py`).

The live policy (`kgpu.autoscaling.predictive`) remembers bursts by the peak concurrency of its
stabilization window and sizes the demand now by the request count over its target. These knobs
replace either: a decaying memory of a work signal, and sizing by the deadlines of the work waiting.
They plug into the live policy as its `Sizing`, and read only what a live gateway knows: a request's
work is its prompt plus the mean answer of the requests completed so far (`Sample.arrived_work`,
`ReplayLoop._pending_work`), never its own answer's length. (The results of 2026-11-30 for the work
signal read each request's full work at arrival: they are clairvoyant baselines, not live policies.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from kgpu.autoscaling.context import ScalingContext
from kgpu.autoscaling.predictive import Sizing
from kgpu.autoscaling.window import Sample


@dataclass(frozen=True)
class HoldTuning:
    """How the policy remembers bursts, when not by its default (the peak concurrency of a fixed window).

    ``signal``: what a tick records as the replicas a burst needs: ``"concurrency"``, the last
    sample's concurrency over the target (the default memory's measure); ``"work"``, the estimated work
    (prompt plus the mean completed answer) that arrived in
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


class TunedSizing(Sizing):
    """The live policy with a HoldTuning's burst memory (and its deadline sizing when it asks for one);
    ``pending`` is (deadline, estimated work left) of every request waiting or in flight."""

    def __init__(self, tuning: HoldTuning, pending: Sequence[tuple[float, float]] = ()) -> None:
        self.tuning = tuning
        self.pending = pending
        self.by_deadline = tuning.reactive == "deadline"
        self.deadline_replicas = 0.0

    def want_now(self, ctx: ScalingContext, demand_now: float) -> int:
        if not self.by_deadline:
            return super().want_now(ctx, demand_now)
        assert self.tuning.replica_throughput is not None
        self.deadline_replicas = deadline_need(self.pending, ctx.now, self.tuning.replica_throughput)
        return math.ceil(self.deadline_replicas - 1e-9)

    takes_observed_headroom = False  # a tuning brings its own (``tuning.headroom``)

    def peak(
        self, ctx: ScalingContext, levels: tuple, last: float, forecast: float, growth: float
    ) -> tuple[float, tuple]:
        tuning, spec, now = self.tuning, ctx.spec, ctx.now
        target = spec.target_per_replica
        if tuning.signal == "work":
            assert tuning.replica_throughput is not None
            level = work_need(ctx.samples, now, tuning.replica_throughput, tuning.slack_s, tuning.windows_s)
        else:
            level = last / target
        keep = tuning.memory_s if tuning.half_life_s is not None else spec.scale_down_stabilization_seconds
        levels = remember(levels, now, level, keep)
        hold = tuning.headroom * held_level(
            levels, now, tuning.half_life_s, spec.scale_down_stabilization_seconds
        )
        now_replicas = self.deadline_replicas + growth / target if self.by_deadline else forecast / target
        return max(hold, now_replicas), levels

    def sustained(self, ctx: ScalingContext, concurrency: float) -> float:
        if self.by_deadline:  # nodes only for work due, too
            return min(concurrency, self.deadline_replicas * ctx.spec.target_per_replica)
        return concurrency
