"""Replica and node-pool autoscalers as pure decision functions over windows of metrics.

Nothing here reads a clock, sleeps or does I/O: the caller passes the time and the
observations, and gets back a decision plus the state to pass in next time. The same
functions drive the live gateway, the local backend and the virtual-clock simulator.
"""

from __future__ import annotations

from kgpu.api.autoscaling import AutoscalingSpec
from kgpu.autoscaling.hpa import HPAState, hpa_decide
from kgpu.autoscaling.kpa import KPAState, kpa_decide
from kgpu.autoscaling.nodepool import NodePoolDecision, PoolState, decide_node_pools
from kgpu.autoscaling.predictive import PredictiveState, predictive_decide
from kgpu.autoscaling.window import Sample, window_average

__all__ = [
    "AutoscalingSpec",
    "HPAState",
    "KPAState",
    "NodePoolDecision",
    "PoolState",
    "PredictiveState",
    "Sample",
    "decide_node_pools",
    "hpa_decide",
    "kpa_decide",
    "predictive_decide",
    "window_average",
]
