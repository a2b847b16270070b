"""One entry point for the replica policies: a name-to-policy map over one `ScalingContext`.

`decide(ctx, state)` runs the policy `ctx.spec.policy` names, with the state it returned last
time. The live autoscaler and the trace replay both call it, so a policy has one set of inputs:

- `kpa`: Knative's concurrency autoscaler over the samples (stable and panic windows);
- `hpa`: the Kubernetes HPA on the in-flight requests per ready replica of the last sample (what a
  replica's metric reports; requests waiting at the gateway are not on any replica);
- `kgpu`: kgpu's predictive policy (`kgpu.autoscaling.predictive`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kgpu.autoscaling.context import ScalingContext
from kgpu.autoscaling.hpa import hpa_decide
from kgpu.autoscaling.kpa import kpa_decide
from kgpu.autoscaling.predictive import predictive_decide


@dataclass(frozen=True)
class ScalingDecision:
    desired: int
    state: object  # handed back to the same policy on the next tick
    panicking: bool = False
    # How many of ``desired`` are held for load not seen yet (kgpu's headroom and onset forecast)
    # rather than for the load seen: a split over clusters (`kgpu.multicluster.placement`) places
    # them only on capacity booted now at the lowest price the service's clusters offer.
    speculative: int = 0


ReplicaPolicy = Callable[[ScalingContext, object], ScalingDecision]


def kpa(ctx: ScalingContext, state: object) -> ScalingDecision:
    decision = kpa_decide(ctx.spec, ctx.samples, ctx.now, ctx.ready, state)
    return ScalingDecision(decision.desired, decision.state, decision.panicking)


def hpa(ctx: ScalingContext, state: object) -> ScalingDecision:
    in_flight = ctx.samples[-1].in_flight if ctx.samples else 0.0
    decision = hpa_decide(ctx.spec, ctx.now, ctx.current, in_flight / max(1, ctx.ready), state)
    return ScalingDecision(decision.desired, decision.state)


def kgpu(ctx: ScalingContext, state: object) -> ScalingDecision:
    decision = predictive_decide(ctx, state)
    return ScalingDecision(decision.desired, decision.state, speculative=decision.speculative)


REPLICA_POLICIES: Mapping[str, ReplicaPolicy] = {"kpa": kpa, "hpa": hpa, "kgpu": kgpu}


def decide(
    ctx: ScalingContext, state: object = None, policies: Mapping[str, ReplicaPolicy] = REPLICA_POLICIES
) -> ScalingDecision:
    """The decision of the service's policy; `policies` replaces the map (research variants)."""
    return policies[ctx.spec.policy](ctx, state)
