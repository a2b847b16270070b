"""Replica and node-pool autoscalers as pure decision functions over windows of metrics.

Nothing here reads a clock, sleeps or does I/O: the caller passes the time and the
observations, and gets back a decision plus the state to pass in next time. The replica
policies have one entry point (`policy.decide` over a `context.ScalingContext`) that both the
live autoscaler and the virtual-clock replay call.
"""

from __future__ import annotations

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.context import ScalingContext
from kgpu.autoscaling.hpa import HPAState, hpa_decide
from kgpu.autoscaling.kpa import KPAState, kpa_decide
from kgpu.autoscaling.nodepool import NodePoolDecision, PoolState, decide_node_pools
from kgpu.autoscaling.policy import REPLICA_POLICIES, ScalingDecision, decide
from kgpu.autoscaling.predictive import PredictiveState, predictive_decide
from kgpu.autoscaling.window import Sample, window_average

__all__ = [
    "REPLICA_POLICIES",
    "AutoscalingSpec",
    "HPAState",
    "KPAState",
    "NodePoolDecision",
    "PoolState",
    "PredictiveState",
    "Sample",
    "ScalingContext",
    "ScalingDecision",
    "decide",
    "decide_node_pools",
    "hpa_decide",
    "kpa_decide",
    "predictive_decide",
    "window_average",
]
